"""Frame-in/frame-out face pipeline: detect -> smooth -> align -> restore -> stabilise (temporal) -> blend."""
