"""Face backbones: importing this package registers every module in it in ``BACKBONES``
(a new backbone is one file here, no list to edit; each one gets a ``face_<name>`` feature set).

``BACKBONES.build(name, weights=None, device="cpu", **options)`` -> ``FaceBackbone``.
"""

from avemo.data.registry import import_modules
from avemo.extract.video.backbones.base import FaceBackbone, TorchBackbone, arcface_template

import_modules(__name__)

__all__ = ["FaceBackbone", "TorchBackbone", "arcface_template"]
