"""Offline evaluation of restorers (``osdface-rtc eval``); imports ``data/``, never ``train/``.

- :mod:`.metrics`: PSNR / SSIM inside the elliptical face region -- the one scoring path
  (:func:`~.metrics.mean_scores`, PSNR capped at ``PSNR_CAP``).
- :mod:`.identity`: dlib face-embedding distance (optional dependency).
- :mod:`.runner`: degrade val faces at fixed levels, restore, score (:func:`~.runner.run_eval`).
- :mod:`.live`: val faces in call-damaged frames or real clips through the full pipeline.
- :mod:`.diagnose`: where a gain is lost between a crop and a call, one change at a time.
- :mod:`.speed`: ms per face at batch 1 / 8, eager and with CUDA graphs where supported.
- :mod:`.report` / :mod:`.live_report`: tables, JSON and sample-grid PNGs.
"""
