"""Reading and writing images and videos (PyAV for video + audio, OpenCV for images)."""
