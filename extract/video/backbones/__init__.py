"""Face backbones: importing this package registers every one in ``BACKBONES``.

``BACKBONES.build(name, weights=None, device="cpu", **options)`` -> ``FaceBackbone``.
"""

from avemo.extract.video.backbones import (  # noqa: F401 - registers
    arcface_onnx,
    faceapi_expression,
    fer2013_minixception,
    hsemotion_enet_b0,
    ir50,
    torchvision_models,
    vggface2_resnet50,
)
from avemo.extract.video.backbones.base import FaceBackbone, TorchBackbone, arcface_template

__all__ = ["FaceBackbone", "TorchBackbone", "arcface_template"]
