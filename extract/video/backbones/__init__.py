"""Face backbones: importing this package registers every one in ``BACKBONES``."""

from avemo.extract.video.backbones import fer2013_minixception  # noqa: F401
from avemo.extract.video.backbones.base import FaceBackbone, TorchBackbone

__all__ = ["FaceBackbone", "TorchBackbone"]
