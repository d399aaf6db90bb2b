"""Scaling out: a restorer pool on Ray Serve shared by many media servers.

- :mod:`.batcher`     deadline-aware cross-request batching + back-pressure (pure asyncio, no Ray)
- :mod:`.deployment`  the Ray Serve deployment (HTTP ingress + handle method) and ``build_app``
- :mod:`.cluster`     starting/connecting Ray on loopback, bounded in time

The client side lives below, in ``osdface_rtc.restore``: :mod:`osdface_rtc.restore.remote`
(:class:`RemoteRestorer`, the ``Restorer`` contract over the pool) and
:mod:`osdface_rtc.restore.protocol` (the wire format of a restore request: raw uint8 crops + a
few headers, and ``PoolBusy``).

Ray is an optional dependency (``pip install -e ".[scale]"``); only ``deployment`` and
``cluster`` import it.
"""
