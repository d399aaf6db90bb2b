"""What the restorer is trained and measured on, the way a call delivers it.

- :mod:`.call`: whole frames through a call (downscale, real-time VP8/H.264 at a bitrate, upscale).
- :mod:`.scenes`: webcam-like clips from still face photos (the face region known exactly).
- :mod:`.livepairs`: (LQ, HQ) crops cut by the pipeline's own detector/aligner from damaged frames.
- :mod:`.regions`: the face region every quality number is measured in.
"""
