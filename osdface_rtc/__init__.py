"""osdface-rtc: live face enhancement for video calls.

Public API (stable names, other modules and users build on them):

- :class:`FaceEnhancer` -- frame in, frame out (detect -> smooth -> align -> restore -> blend).
- :func:`load_restorer` -- the shipped one-step model, ``"classical"``, a model folder, or
  ``"osdface:/path"`` for the released OSDFace checkpoint.
- :class:`EnhanceTrack` -- an aiortc ``MediaStreamTrack`` wrapping any incoming video track.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["FaceEnhancer", "EnhancerConfig", "load_restorer", "EnhanceTrack", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .pipeline.enhancer import EnhancerConfig, FaceEnhancer
    from .restore import load_restorer
    from .rtc.track import EnhanceTrack


def __getattr__(name: str) -> Any:
    # Lazy imports keep `import osdface_rtc` cheap (no torch/mediapipe/aiortc until used).
    if name in ("FaceEnhancer", "EnhancerConfig"):
        from .pipeline import enhancer

        return getattr(enhancer, name)
    if name == "load_restorer":
        from .restore import load_restorer

        return load_restorer
    if name == "EnhanceTrack":
        from .rtc.track import EnhanceTrack

        return EnhanceTrack
    raise AttributeError(f"module 'osdface_rtc' has no attribute {name!r}")
