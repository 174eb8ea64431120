"""Face detectors (registry ``DETECTORS``): ``mtcnn``, ``blazeface`` / ``blazeface_mtcnn``,
``scrfd_2.5g``, ``scrfd`` / ``retinaface`` (user insightface packs). Importing this package
registers every module in it (a new detector is one file here, no list to edit)."""

from avemo.data.registry import import_modules
from avemo.extract.video.detectors.base import Detector, Faces

import_modules(__name__)

__all__ = ["Detector", "Faces"]
