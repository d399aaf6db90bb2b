"""The bottom of the restorer stack: the :class:`Restorer` contract and the restorers that need
no model code.

- :mod:`.base`       the contract (``restore``: N x S x S x 3 uint8 RGB in and out) and errors
- :mod:`.classical`  the built-in baselines (classical denoise + unsharp, identity)
- :mod:`.remote`     :class:`~.remote.RemoteRestorer`: the contract over a restorer pool (HTTP)
- :mod:`.protocol`   the pool's wire format (shared by the client and ``osdface_rtc.scale``)

The factory that picks one from a ``--model`` spec is :func:`osdface_rtc.restorers.load_restorer`
(one layer up, above ``model/``).
"""
from __future__ import annotations

from .base import Restorer, RestorerError, check_batch
from .classical import ClassicalRestorer, IdentityRestorer

__all__ = [
    "Restorer",
    "RestorerError",
    "ClassicalRestorer",
    "IdentityRestorer",
    "check_batch",
]
