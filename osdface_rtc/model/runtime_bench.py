"""ms per face of the shipped (or any) model folder: torch vs OpenVINO on the CPU, batch 1/4/8.

    python -m osdface_rtc.model.runtime_bench [--model DIR] [--threads 1,2] [--batches 1,4,8]

Real faces from the shared data when present (else random crops); prints a Markdown table and
the max |OpenVINO - torch| in LSB. Timings: median of ``--iters`` calls after 2 warm-up calls.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def faces(n: int, size: int) -> np.ndarray:
    import cv2

    from ..paths import faces_dir

    files = sorted(faces_dir().glob("*.jpg"))[:n] if faces_dir().is_dir() else []
    if len(files) < n:
        return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return np.stack([cv2.resize(cv2.imread(str(f))[:, :, ::-1], (size, size)) for f in files])


def time_ms(fn, iters: int) -> float:
    fn()
    fn()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(ts))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batches", default="1,4,8")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--out", default=None, help="JSON file")
    args = ap.parse_args(argv)
    import torch

    from ..paths import default_model_dir
    from .restorer import load_model_restorer

    model = args.model or default_model_dir()
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        rts = {rt: load_model_restorer(model, device="cpu", runtime=rt) for rt in ("torch", "openvino")}
        batch = faces(max(int(b) for b in args.batches.split(",")), rts["torch"].face_size)
        diff = int(np.abs(rts["openvino"].restore(batch).astype(int) - rts["torch"].restore(batch)).max())
        for b in (int(b) for b in args.batches.split(",")):
            row = {"threads": threads, "batch": b, "max_diff_lsb": diff}
            for rt, r in rts.items():
                row[f"{rt}_ms_per_face"] = round(time_ms(lambda: r.restore(batch[:b]), args.iters) / b, 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    load = round(os.getloadavg()[0], 2)
    print(f"\n| threads | batch | torch ms/face | OpenVINO ms/face | max diff (LSB) |  (load avg {load})")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['threads']} | {r['batch']} | {r['torch_ms_per_face']} | {r['openvino_ms_per_face']} "
              f"| {r['max_diff_lsb']} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"rows": rows, "loadavg_1m": load}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
