"""Live WebRTC enhancement: :class:`~osdface_rtc.rtc.track.EnhanceTrack`, the aiohttp server
(``osdface-rtc serve``), Prometheus metrics, ICE helpers and the loopback benchmark.

Modules import aiortc lazily from here: ``import osdface_rtc.rtc.track`` pulls it in.
"""
