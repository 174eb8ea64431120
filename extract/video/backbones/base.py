"""What every face backbone promises the face pipeline, and the shared torch plumbing.

The pipeline aligns faces to the ArcFace 5-point template and hands each backbone a batch of
uint8 RGB crops of the size it asks for. The backbone owns everything after that (colour,
normalisation, device, precision), so the pipeline never needs per-model branches.

``align_margin``: extra context around the ArcFace-template crop, as a fraction of the crop
side: 0 is insightface's 112 template as is; 0.25 means the template occupies 1/1.25 of the
crop, leaving the rest as border. Each backbone picks the value matching its training crops.
``crop`` (an ``align.CropSpec``) overrides it for networks not trained on template crops, e.g.
the FER2013 mini-Xception's detector-box crop, chosen by ``avemo.bench.crops``.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from avemo.data.pypi_fetch import sha256_file
from avemo.data.registry import RegisteredName
from avemo.devices import resolve_device
from avemo.extract.registry import BACKBONES
from avemo.extract.video.align import CropSpec
from avemo.extract.weights import resolve

log = logging.getLogger(__name__)

# insightface's ArcFace 5-point template for 112x112 crops: eyes, nose tip, mouth corners (x, y).
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)


def arcface_template(size: int, margin: float = 0.0) -> np.ndarray:
    """The 5 template points for a ``size`` crop with ``margin`` extra context (see module doc).

    The 112 template is scaled to occupy ``1 / (1 + margin)`` of the crop side and centred.
    """
    scale = size / (112.0 * (1.0 + margin))
    offset = (size - 112.0 * scale) / 2.0
    return (ARCFACE_TEMPLATE_112 * scale + offset).astype(np.float32)


_SHA_CACHE: dict[tuple[str, float, int], str] = {}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a weight file, memoised on (path, mtime, size): big files are hashed once."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_mtime, st.st_size)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = sha256_file(path)
    return _SHA_CACHE[key]


class FaceBackbone(ABC):
    """A face CNN turning aligned uint8 RGB crops into one feature vector per crop.

    Build with ``BACKBONES.build(name, weights=None, device="cpu", **options)``.
    """

    name = RegisteredName(BACKBONES)  # the key in @BACKBONES.register("...")
    input_size: int
    grayscale: bool = False
    align_margin: float = 0.0
    #: the crop the network was trained on (None: ArcFace template with ``align_margin``)
    crop: ClassVar[CropSpec | None] = None
    out_dim: int
    tap: str
    #: its feature set, registered for it (``feature_sets.register_backbone_sets``):
    #: ``face_<face_set>``; "" names it ``face_<registry key>``; None: none (needs an option)
    face_set: ClassVar[str | None] = ""

    @classmethod
    def crop_spec(cls) -> CropSpec:
        """How the pipeline cuts this backbone's input crop (``align.crop_faces``)."""
        return cls.crop if cls.crop is not None else CropSpec("template", float(cls.align_margin))

    @abstractmethod
    def weights_info(self) -> dict[str, str]:
        """Weight name -> sha256 of every file used (feature-file provenance)."""

    @abstractmethod
    def embed(self, crops: torch.Tensor) -> torch.Tensor:
        """uint8 [N, S, S, 3] RGB (S = input_size) -> float32 [N, out_dim] on the CPU."""

    def describe(self) -> dict[str, Any]:
        """Everything that changes the numbers, for provenance and ``avemo list``."""
        return {
            "name": self.name,
            "input_size": self.input_size,
            "grayscale": self.grayscale,
            "align_margin": self.align_margin,
            "crop": self.crop_spec().as_config(),
            "out_dim": self.out_dim,
            "tap": self.tap,
        }

    def check_crops(self, crops: torch.Tensor) -> torch.Tensor:
        """Validate the pipeline's crops once, with a message saying what was expected."""
        if not isinstance(crops, torch.Tensor):
            crops = torch.as_tensor(crops)
        s = self.input_size
        if crops.dtype != torch.uint8 or crops.ndim != 4 or tuple(crops.shape[1:]) != (s, s, 3):
            raise ValueError(
                f"backbone {self.name!r} expects uint8 crops [N, {s}, {s}, 3] RGB, "
                f"got {crops.dtype} {tuple(crops.shape)}"
            )
        return crops


class TorchBackbone(FaceBackbone):
    """A backbone whose network is a torch module mapping normalised NCHW input to features.

    Subclasses set ``self.net`` (eval mode, weights loaded) and the normalisation attributes;
    ``embed`` handles batching, colour, normalisation, device, channels_last and bf16 autocast.
    """

    # per-channel normalisation on the 0..255 scale: x = (pixel - mean) / std
    mean: tuple[float, ...] = (127.5, 127.5, 127.5)
    std: tuple[float, ...] = (127.5, 127.5, 127.5)
    bgr: bool = False  # feed channels as BGR (Caffe-trained models)

    def __init__(self, device: str = "cpu", batch_size: int = 128) -> None:
        self.device = resolve_device(device, f"backbone {self.name!r}")
        self.batch_size = int(batch_size)
        self.net: nn.Module

    def _finish(self, net: nn.Module) -> None:
        """Move to the device, eval mode, channels_last; called once weights are loaded."""
        self.net = net.eval().to(self.device).to(memory_format=torch.channels_last)
        for p in self.net.parameters():
            p.requires_grad_(False)
        c = 1 if self.grayscale else 3
        self._mean = torch.tensor(self.mean[:c], dtype=torch.float32, device=self.device).view(
            1, c, 1, 1
        )
        self._scale = 1.0 / torch.tensor(
            self.std[:c], dtype=torch.float32, device=self.device
        ).view(1, c, 1, 1)
        self._grey = torch.tensor([0.299, 0.587, 0.114], device=self.device).view(1, 3, 1, 1)

    def preprocess(self, crops: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC RGB -> normalised float32 NCHW (channels_last) on the device."""
        x = crops.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        if self.grayscale:  # ITU-R BT.601 luma, as OpenCV's RGB2GRAY (without rounding)
            x = (x * self._grey).sum(1, keepdim=True)
        elif self.bgr:
            x = x.flip(1)
        x = (x - self._mean) * self._scale
        return x.contiguous(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised input -> features; override to tap something other than ``net``'s output."""
        return self.net(x)

    @torch.inference_mode()
    def embed(self, crops: torch.Tensor) -> torch.Tensor:
        crops = self.check_crops(crops)
        if len(crops) == 0:
            return torch.zeros((0, self.out_dim), dtype=torch.float32)
        outs = []
        cuda = self.device.type == "cuda"
        for i in range(0, len(crops), self.batch_size):
            x = self.preprocess(crops[i : i + self.batch_size])
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                y = self.forward(x)
            outs.append(y.float().reshape(len(x), -1).cpu())
        return torch.cat(outs)


def put_param(
    param: torch.Tensor,
    value: np.ndarray,
    where: str,
    error: type[Exception] = ValueError,
    source: str = "file",
) -> None:
    """Copy a weight read from a foreign format into a port's tensor, refusing a shape mismatch."""
    if tuple(param.shape) != value.shape:
        raise error(f"{where}: {source} shape {value.shape} != port shape {tuple(param.shape)}")
    param.copy_(torch.from_numpy(np.ascontiguousarray(value)))


class ExpressionBackbone(TorchBackbone):
    """An emotion network whose module returns ``(pooled features, class logits)``.

    Rows are the features, followed by the logits in ``classes`` order with ``with_logits``
    (the feature set then stores ``classes`` in the file, so nobody guesses the order).
    """

    classes: ClassVar[tuple[str, ...]] = ()

    def _finish_head(
        self, net: nn.Module, feat_dim: int, n_classes: int, with_logits: bool, tap: str
    ) -> None:
        if n_classes != len(self.classes):
            raise ValueError(
                f"{type(self).__name__}: the network has {n_classes} classes, "
                f"the port names {len(self.classes)}"
            )
        self.num_classes = n_classes
        self.with_logits = bool(with_logits)
        self.out_dim = feat_dim + (n_classes if self.with_logits else 0)
        self.tap = tap + (" + class logits (pre-softmax)" if self.with_logits else "")
        self._finish(net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats, logits = self.net(x)
        return torch.cat([feats, logits], 1) if self.with_logits else feats

    @torch.inference_mode()
    def predict_proba(self, crops: torch.Tensor) -> torch.Tensor:
        """Softmax over the classes (``classes`` order): what the reference network outputs."""
        crops = self.check_crops(crops)
        return torch.softmax(self.net(self.preprocess(crops))[1].float(), 1).cpu()


def load_state_dict_file(path: str | os.PathLike[str], who: str) -> Mapping[str, torch.Tensor]:
    """A plain state dict from ``path`` (weights_only), unwrapping common checkpoint nesting."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickled modules, corrupt files ...
        raise ValueError(
            f"{who}: {path} is not a plain state dict loadable with torch.load(weights_only=True) "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). If it is a pickled "
            "model you trust, convert it once where its code is installed: unpickle it with "
            "torch (weights_only=False) and torch.save its .state_dict() to a new file"
        ) from e
    for key in ("state_dict", "model_state_dict", "model", "net"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{who}: {path} does not hold a state dict (name -> tensor)")
    return obj  # keeps ``_metadata`` (module versions some torchvision models check)


def _strip(key: str, prefixes: tuple[str, ...]) -> str:
    """``module.backbone.x`` -> ``x``: leading wrapper prefixes, repeatedly."""
    while prefixes and key.startswith(prefixes):
        key = key[len(next(p for p in prefixes if key.startswith(p))) :]
    return key


def load_into(
    net: nn.Module,
    state: Mapping[str, torch.Tensor],
    who: str,
    path: str | os.PathLike[str],
    ignore_prefixes: tuple[str, ...] = (),
    layout: str = "",
    strip_prefixes: tuple[str, ...] = ("module.",),
) -> None:
    """Strict load with one readable error listing missing, unexpected and wrong-shaped keys.

    Leading ``strip_prefixes`` (DataParallel's ``module.``, wrappers' ``backbone.``) are stripped; keys under ``ignore_prefixes`` (classifier
    heads the tap does not use) are dropped.
    """
    clean: OrderedDict[str, torch.Tensor] = OrderedDict()
    for k, v in state.items():
        k = _strip(k, strip_prefixes)
        if not (ignore_prefixes and k.startswith(ignore_prefixes)):
            clean[k] = v
    meta = getattr(state, "_metadata", None)
    if meta is not None:
        # torch's dynamic state-dict attribute (per-module versions), read by load_state_dict
        clean._metadata = OrderedDict(  # type: ignore[attr-defined]  # not in torch's types
            (_strip(m + ".", strip_prefixes)[:-1], v) for m, v in meta.items()
        )
    own = net.state_dict()
    for k in own:  # BN step counters: absent from converted (numpy / Caffe) weights, unused in eval
        if k.endswith("num_batches_tracked") and k not in clean:
            clean[k] = own[k]
    missing = [k for k in own if k not in clean]
    unexpected = [k for k in clean if k not in own]
    wrong = [
        f"{k}: file {tuple(clean[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in clean and tuple(clean[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        for title, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("wrong shape", wrong),
        ):
            if items:
                more = f" ... (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{len(items)} {title}: " + "; ".join(items[:5]) + more)
        hint = f" Expected key layout: {layout}" if layout else ""
        raise ValueError(
            f"{who}: weights in {path} do not fit the architecture: "
            + " | ".join(parts)
            + "."
            + hint
        )
    net.load_state_dict(clean, strict=True)


class StateDictBackbone(TorchBackbone):
    """A backbone whose architecture lives here and whose weights are a user's state dict file.

    Subclasses set ``weight`` (a registered ``WeightSpec``: where to get the file, where to put
    it), ``layout`` (the expected keys, for error messages), ``ignore_prefixes`` (heads the tap
    does not use) and implement ``build()``.
    """

    weight: ClassVar[Any]  # WeightSpec
    layout: ClassVar[str] = ""
    ignore_prefixes: ClassVar[tuple[str, ...]] = ()
    strip_prefixes: ClassVar[tuple[str, ...]] = ("module.",)

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        device: str = "cpu",
        batch_size: int = 64,
    ) -> None:
        super().__init__(device=device, batch_size=batch_size)
        self.weights_path = Path(resolve(self.weight.name, weights))  # fails fast, before building
        state = load_state_dict_file(self.weights_path, self.name)
        net = self.build()
        try:
            args = (self.ignore_prefixes, self.layout, self.strip_prefixes)
            load_into(net, state, self.name, self.weights_path, *args)
        except ValueError as e:
            raise ValueError(f"{e} {self.hint(state)}".strip()) from None
        self._finish(net)

    def hint(self, state: Mapping[str, torch.Tensor]) -> str:
        """Extra advice when ``state`` does not fit (e.g. a different input size)."""
        return ""

    @abstractmethod
    def build(self) -> nn.Module:
        """The network, randomly initialised, with the keys of ``layout``."""

    def weights_info(self) -> dict[str, str]:
        return {self.weight.name: file_sha256(self.weights_path)}
