"""What the restorer is trained and measured on: faces, crop-level damage, call damage, pairs.

Below both ``train/`` and ``evaluate/`` (they share it); nothing here imports either.

- :mod:`.faces`: the UTKFace files, their fixed train/val split, loading and sharpness.
- :mod:`.degrade`: crop-level degradation (the random training mix and the fixed eval levels).
- :mod:`.pool`: a cached, multi-process pool of degraded training variants.
- :mod:`.pairs`: (LQ, HQ) pair datasets (inline degradation, precomputed pairs, concatenation).
- :mod:`.call`: whole frames through a call (downscale, real-time VP8/H.264 at a bitrate, upscale).
- :mod:`.scenes`: webcam-like clips from still face photos (the face region known exactly).
- :mod:`.livepairs`: (LQ, HQ) crops cut by the pipeline's own detector/aligner from damaged frames.
- :mod:`.regions`: the face region every quality number is measured in.
"""
