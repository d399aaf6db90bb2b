"""osdface-rtc: live face enhancement for video calls.

Public API (stable names, other modules and users build on them):

- :class:`FaceEnhancer` -- frame in, frame out (detect -> smooth -> align -> restore -> stabilise -> blend).
- :func:`load_restorer` -- the shipped one-step model, ``"classical"``, a model folder, or
  ``"osdface:/path"`` for the released OSDFace checkpoint.
- :func:`load_enhancer` -- ``FaceEnhancer(load_restorer(spec, device), config, **overrides)``.
- :class:`EnhanceTrack` -- an aiortc ``MediaStreamTrack`` wrapping any incoming video track.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["FaceEnhancer", "EnhancerConfig", "load_restorer", "load_enhancer", "EnhanceTrack", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .pipeline.enhancer import EnhancerConfig, FaceEnhancer
    from .restorers import load_restorer
    from .rtc.track import EnhanceTrack


def load_enhancer(spec: str | None = None, device: str = "auto", config: EnhancerConfig | None = None,
                  **overrides: Any) -> FaceEnhancer:
    """A :class:`FaceEnhancer` on the restorer ``load_restorer(spec, device=device)`` loads
    (``None``: the shipped model); ``config`` / ``overrides`` are FaceEnhancer's."""
    from .pipeline.enhancer import FaceEnhancer
    from .restorers import load_restorer

    return FaceEnhancer(load_restorer(spec, device=device), config, **overrides)


def __getattr__(name: str) -> Any:
    # Lazy imports keep `import osdface_rtc` cheap (no torch/mediapipe/aiortc until used).
    if name in ("FaceEnhancer", "EnhancerConfig"):
        from .pipeline import enhancer

        return getattr(enhancer, name)
    if name == "load_restorer":
        from .restorers import load_restorer

        return load_restorer
    if name == "EnhanceTrack":
        from .rtc.track import EnhanceTrack

        return EnhanceTrack
    raise AttributeError(f"module 'osdface_rtc' has no attribute {name!r}")
