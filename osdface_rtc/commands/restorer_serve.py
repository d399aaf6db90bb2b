"""`osdface-rtc restorer-serve`: the restorer as a Ray Serve deployment shared by media servers."""
from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

log = logging.getLogger("osdface_rtc")


def register(sub) -> None:
    p = sub.add_parser(
        "restorer-serve",
        help="serve the restorer as a Ray Serve pool for `serve --model ray://HOST:PORT/APP`",
        description="Deploy the face restorer on Ray Serve: replicas (CPU or GPU), deadline-aware "
        "batching of crops from all media servers, back-pressure (a full queue answers 503 at once). "
        "Media servers use it with `osdface-rtc serve --model ray://HOST:PORT/APP`. Needs the "
        "`scale` extra (pip install -e '.[scale]').",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", default=None,
                   help="model folder, 'classical', 'osdface:/dir' or 'py:module:factory' (default: shipped model)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (per replica)")
    p.add_argument("--torch-threads", type=int, default=None, help="torch threads per replica (CPU default: 1)")
    p.add_argument("--runtime", choices=("auto", "torch", "openvino"), default="auto",
                   help="model runtime per replica: auto = OpenVINO on the CPU when installed, else torch")
    p.add_argument("--app", default="restorer", help="Serve application name and HTTP route (/APP)")
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--cpus-per-replica", type=float, default=1.0)
    p.add_argument("--gpus-per-replica", type=float, default=0.0)
    p.add_argument("--max-batch", type=int, default=16, help="faces per forward pass")
    p.add_argument("--max-wait-ms", type=float, default=4.0,
                   help="longest wait for more crops after the first of a batch (never past a request's budget)")
    p.add_argument("--max-queued", type=int, default=48, help="queued faces per replica before refusing (503)")
    p.add_argument("--max-age-ms", type=float, default=1000.0, help="drop queued requests older than this")
    p.add_argument("--address", default="local",
                   help="'local' (new single-node Ray on 127.0.0.1, stopped on exit), 'auto' or HOST:PORT of a "
                   "running cluster (on exit only this application is deleted)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local cluster (default: all)")
    p.add_argument("--num-gpus", type=int, default=None, help="GPUs of a local cluster (default: all)")
    p.add_argument("--http-host", default="127.0.0.1", help="Serve's HTTP proxy address")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--start-timeout", type=float, default=120.0, help="seconds for Ray + deployment to come up")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        from ray import serve
    except ImportError as exc:
        print(f"osdface-rtc restorer-serve: Ray Serve is not installed ({exc}); "
              "pip install -e '.[scale]' -c constraints/scale.txt")
        return 2
    from ..scale.cluster import ClusterConfig, init_ray, start_serve, time_limit
    from ..scale.deployment import PoolConfig, deployment_for
    from ..scale.batcher import BatcherConfig

    model = args.model
    if model and not model.startswith(("py:", "osdface:")) and model not in ("classical", "identity"):
        model = str(Path(model).expanduser().resolve())  # replicas may run in another directory
    elif model and model.startswith("osdface:"):
        model = "osdface:" + str(Path(model[8:]).expanduser().resolve())
    pool = PoolConfig(
        model=model, device=args.device, runtime=args.runtime, torch_threads=args.torch_threads,
        replicas=args.replicas,
        cpus_per_replica=args.cpus_per_replica, gpus_per_replica=args.gpus_per_replica,
        batcher=BatcherConfig(max_batch_faces=args.max_batch, max_wait_ms=args.max_wait_ms,
                              max_queued_faces=args.max_queued, max_age_ms=args.max_age_ms),
    )
    cluster = ClusterConfig(address=args.address, num_cpus=args.num_cpus, num_gpus=args.num_gpus,
                            start_timeout_s=args.start_timeout, http_host=args.http_host,
                            http_port=args.http_port)
    init_ray(cluster)  # main thread, bounded by start_timeout
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # after ray.init, which installs its own
        signal.signal(sig, lambda *_: stop.set())
    try:
        start_serve(cluster)
        with time_limit(args.start_timeout, f"the deployment was not ready within {args.start_timeout:.0f} s"):
            serve.run(deployment_for(pool), name=args.app, route_prefix=f"/{args.app}", blocking=False)
        url = f"http://{args.http_host}:{args.http_port}/{args.app}"
        log.info("restorer pool ready: %s (media servers: osdface-rtc serve --model ray://%s:%d/%s)",
                 url, args.http_host, args.http_port, args.app)
        print(f"READY {url}", flush=True)
        while not stop.wait(1.0):  # a timed wait, so signals are handled promptly
            pass
    finally:
        log.info("restorer pool stopping")
        try:
            if args.address == "local":
                serve.shutdown()  # our own cluster: everything goes
            else:
                serve.delete(args.app)  # a shared cluster: only our application
        finally:
            import ray

            ray.shutdown()
    return 0
