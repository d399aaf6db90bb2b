"""Training the one-step restorer (:class:`~osdface_rtc.model.network.OSDFaceNet`) in stages.

- :mod:`.config`: :class:`~.config.TrainConfig` and its presets (``real``, ``gpu``, ``tiny``).
- :mod:`.inputs`: the run's HQ targets, training pairs and val pairs, from :mod:`osdface_rtc.data`.
- :mod:`.losses`: Laplacian-pyramid L1, the patch discriminator, k-means for the codebook.
- :mod:`.loop`: the stage loop (:class:`~.loop.Trainer`): steps, EMA, checkpoints, validation.
- :mod:`.card`: the loss plot and the model card.
- :mod:`.trainer`: :func:`~.trainer.train`, one whole run.
- :mod:`.livedata`: live-path train/val pairs for a run; :mod:`.pack`: pairs packed for a GPU box.
"""
