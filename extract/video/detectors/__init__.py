"""Face detectors (registry ``DETECTORS``): ``mtcnn``, ``blazeface`` / ``blazeface_mtcnn``,
``scrfd_2.5g``, ``scrfd`` / ``retinaface`` (user insightface packs)."""

from avemo.extract.video.detectors import blazeface, insight, mtcnn  # noqa: F401 - registers
from avemo.extract.video.detectors.base import Detector, Faces

__all__ = ["Detector", "Faces"]
