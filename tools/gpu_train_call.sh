#!/usr/bin/env bash
# One call of the GPU training recipe on a lent device machine (README: "Training on a GPU").
#   here, once:   python -m osdface_rtc.train.pack --out .pack/pairs.tar       (<= 50 MB of pairs)
#                 python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#                   --implementation cp --platform manylinux_2_28_x86_64 -d .whl diffusers==0.42.1
#   each call:    run  "bash tools/gpu_train_call.sh"  carrying .pack and .whl; then copy the
#                 returned $OUT/run/* into .pack/run/ so the next call resumes from it.
# The machine has torch + CUDA + opencv + numpy but no diffusers (carried), mediapipe or PyAV
# (not needed: the pairs are packed). Checkpoints are slim (EMA in bf16, < 16 MiB) so they come back.
set -euo pipefail
MINUTES=${MINUTES:-8}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
RUN="$OUT/run"
mkdir -p "$RUN"
resume=()
if [ -f .pack/run/ckpt.pt ]; then cp -r .pack/run/. "$RUN"/; resume=(--resume); fi
python3 -m osdface_rtc.cli train --preset gpu --device cuda --pack .pack/pairs.tar --out "$RUN" \
  --for-minutes "$MINUTES" "${resume[@]}"
python3 -m osdface_rtc.evaluate.speed "$RUN/model" --device cuda --out "$RUN/cuda_speed.json" || true
