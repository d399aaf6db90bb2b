"""Scaling out: a restorer pool on Ray Serve shared by many media servers.

- :mod:`.batcher`     deadline-aware cross-request batching + back-pressure (pure asyncio, no Ray)
- :mod:`.protocol`    the wire format of a restore request (raw uint8 crops + a few headers)
- :mod:`.deployment`  the Ray Serve deployment (HTTP ingress + handle method) and ``build_app``
- :mod:`.cluster`     starting/connecting Ray on loopback, bounded in time
- :mod:`.remote`      :class:`RemoteRestorer`: the ``Restorer`` contract over the pool

Ray is an optional dependency (``pip install -e ".[scale]"``); only ``deployment`` and
``cluster`` import it.
"""
