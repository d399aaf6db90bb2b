"""``osdface-rtc train``: one whole run, from the config to the saved model folder.

:func:`train` builds the :class:`~osdface_rtc.train.loop.Trainer`, the data
(:func:`~osdface_rtc.train.inputs.prepare_data`), runs the stages and saves the EMA model with
``save_pretrained`` into ``cfg.out/model``, next to its model card
(:func:`~osdface_rtc.train.card.write_model_card`).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from .card import write_model_card
from .config import TrainConfig
from .inputs import TrainData, prepare_data
from .loop import Trainer

log = logging.getLogger("osdface_rtc")


def train(cfg: TrainConfig, resume: bool = False, data: TrainData | None = None,
          for_minutes: float | None = None) -> Path:
    """Run a whole training and ``save_pretrained`` the EMA model into ``cfg.out/model``.

    ``data`` (from :func:`~osdface_rtc.train.inputs.build_data`) skips loading the face folder
    (tests). ``for_minutes``: stop this call after that long (checkpoint and model saved;
    ``resume=True`` continues).
    """
    t0 = time.time()
    trainer = Trainer(cfg, resume=resume)
    data = data if data is not None else prepare_data(cfg)
    model = trainer.run(data, deadline=t0 + 60 * for_minutes if for_minutes else None)
    out = Path(cfg.out) / "model"
    model.save_pretrained(out)
    write_model_card(out, cfg, trainer, model, data, minutes=(time.time() - t0) / 60)
    log.info("saved %s", out)
    return out
