# One-command entry points. Each target sets up what it needs first (idempotent).
#   make serve   -> venv + install + run the live server on the shipped model
#   make test    -> venv + install (+ Debian chromium for the browser test, when root) + pytest
PY ?= python3
VENV ?= .venv
# The CPU build of torch by default (a local wheel on our CI boxes). On a CUDA machine:
#   make serve TORCH="torch"   (PyPI's default Linux build includes CUDA)
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: setup scale serve test browser bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip "setuptools>=70.1"
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

# The `scale` extra (Ray Serve, for the restorer pool and its tests), under constraints/scale.txt
# (protobuf < 5, which mediapipe 0.10.21 needs). A failed install only skips the pool tests.
scale: $(VENV)/.scale-installed

$(VENV)/.scale-installed: $(VENV)/.installed constraints/scale.txt
	$(BIN)/python -m pip install -q -e ".[scale]" -c constraints/scale.txt \
	  && $(BIN)/python -c "import mediapipe, ray.serve" && touch $@ \
	  || echo "ray[serve] install failed: the restorer-pool tests will be skipped"

serve: setup
	$(BIN)/osdface-rtc serve --host $(HOST) --port $(PORT)

# Debian's chromium for the real-browser test (skipped with a reason when absent).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "chromium install failed: the browser test will be skipped"; \
	  else echo "no chromium and not root: the browser test will be skipped"; fi; }

test: setup scale browser
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: setup
	$(BIN)/osdface-rtc bench

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
