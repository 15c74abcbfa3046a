"""Moved to c3det/efficientnet_lite.py. This name stays for one reason: a YOLO-Lite checkpoint
written before the move is a pickle that names these classes by their old module
(ultralytics saves the model object), and unpickling looks them up here. Import
c3det.efficientnet_lite in code."""
from c3det.efficientnet_lite import *  # noqa: F401,F403
from c3det.efficientnet_lite import EfficientNetLite, MBConv, SameConv  # noqa: F401
