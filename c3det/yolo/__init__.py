"""The ultralytics one-stage backend: YOLO models trained here from a model yaml (no weight
file can be downloaded), used as a fast pre-annotator and, with the C3Det click fusion in its
neck, as a one-stage interactive detector. Import `c3det.yolo.offline` first: it configures
ultralytics so nothing reaches the network."""
