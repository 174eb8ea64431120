"""Face detectors (registry ``DETECTORS``): ``mtcnn`` (default), ``scrfd`` / ``retinaface``."""

from avemo.extract.video.detectors import insight, mtcnn  # noqa: F401 - registers
from avemo.extract.video.detectors.base import Detector, Faces

__all__ = ["Detector", "Faces"]
