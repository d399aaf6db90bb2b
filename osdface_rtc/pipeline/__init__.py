"""Frame-in/frame-out face pipeline: detect -> smooth -> align -> restore -> blend."""
