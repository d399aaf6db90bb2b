"""Offline evaluation of restorers on the val faces (``osdface-rtc eval``).

- :mod:`.metrics`: PSNR / SSIM inside the elliptical face region (:func:`face_mask`).
- :mod:`.identity`: dlib face-embedding distance (optional dependency).
- :mod:`.runner`: degrade val faces at fixed levels, restore, score (:func:`run_eval`).
- :mod:`.speed`: ms per face at batch 1 / 8, eager and with CUDA graphs where supported.
- :mod:`.report`: table, JSON and sample-grid PNG.
"""
