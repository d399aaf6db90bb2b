"""Training data for the restorer: video-call degradations (:mod:`.degrade`) and UTKFace loading (:mod:`.data`)."""
