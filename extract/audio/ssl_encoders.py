"""Self-supervised speech encoders (WavLM, HuBERT, wav2vec 2.0): every hidden layer, cached once.

Feature sets ``speech_wavlm``, ``speech_hubert``, ``speech_wav2vec2`` run transformers'
``WavLMModel`` / ``HubertModel`` / ``Wav2Vec2Model`` (the ``[ssl]`` extra). transformers, not
torchaudio's pipelines: it loads all three families (and fine-tuned checkpoints, WavLM
included) from one folder layout, the hub's, and torchaudio has no wheel for the torch we pin.

Rows: ``output_hidden_states`` of the model, one row per 20 ms frame (50 Hz; frame ``g`` sees
samples ``[320 g, 320 g + 400)`` at 16 kHz and is stamped with their centre, ``(320 g + 200) /
16000`` s). ``layers: all`` keeps every hidden state -- the CNN/positional embedding (index 0)
and each transformer layer -- as rows ``[L + 1, D]`` (13 x 768 for the base models), so stage
two can pick or weight layers (``layer_weights`` encoder) without extracting again; ``last``
keeps ``[D]``; a list of indices keeps those. Stored as float16 (``store_dtype``), half the
bytes: ~3.6 GB per hour of audio for a base model's 13 layers at 50 Hz (``pool_frames: 2`` halves
it again by averaging frame pairs).

Long clips: windows of ``window_s`` (20 s) overlapping by ``overlap_s`` (2 s), starts on the
model's 320-sample frame grid, each run on its own; a frame in an overlap is taken from the
window whose edge is farther (the overlap is split in half), elsewhere from the only window
that holds it, so the rows are those of the window runs, on the clip's one timeline.
Batches: windows sorted by length; a model whose CNN uses GroupNorm over time (the base
models) only batches windows of equal length (padding would change its numbers), a LayerNorm
one (the large models) pads and masks. ``precision: auto`` runs float16 autocast on a GPU and
float32 on the CPU.

Weights: a folder in the hub layout (``config.json`` + ``model.safetensors`` or
``pytorch_model.bin``, optional ``preprocessor_config.json``): ``backbone_weights``, else
``AVEMO_WEIGHTS_SPEECH_WAVLM`` (``..._HUBERT``, ``..._WAV2VEC2``), else the cache
(``$AVEMO_CACHE/weights/hf/<org>--<name>@<revision>``), else, only with
``AVEMO_ALLOW_DOWNLOAD=1``, the hub (``model`` at ``revision``) into that cache folder. The
provenance records the sha256 of every weight and config file and, for a hub download, the
repository and commit. ``normalize: null`` takes ``do_normalize`` from the folder's
preprocessor config (per-clip zero mean, unit variance, as the checkpoint was trained).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from avemo import settings
from avemo.data.pypi_fetch import cache_dir, sha256_file
from avemo.errors import FeatureConfigError
from avemo.extract.audio.common import AudioFeatureSet, Result
from avemo.extract.base import Param
from avemo.extract.registry import FEATURE_SETS
from avemo.extract.weights import MissingWeightsError

WEIGHT_GLOBS = ("*.safetensors", "*.bin")  # what from_pretrained reads (never pickled modules)
META_FILES = ("config.json", "preprocessor_config.json")
SOURCE_FILE = "avemo_source.json"  # written after a hub download: repository and commit


INSTALL_HINT = (
    "needs transformers, an optional extra: pip install avemo[ssl]  (from a checkout: "
    "pip install -e '.[ssl]' or pip install -r requirements-ssl.lock)"
)


def folder_digests(folder: Path) -> dict[str, str]:
    """File name -> sha256 of the weight and config files of a hub-layout folder."""
    files = sorted({p for g in WEIGHT_GLOBS for p in folder.glob(g)})
    files += [folder / m for m in META_FILES if (folder / m).is_file()]
    return {p.name: sha256_file(p) for p in files}


def frame_geometry(kernels: Sequence[int], strides: Sequence[int]) -> tuple[int, int]:
    """(hop, receptive field) in samples of a stack of unpadded 1-D convolutions."""
    hop, field = 1, 1
    for k, s in zip(kernels, strides, strict=True):
        field += (int(k) - 1) * hop
        hop *= int(s)
    return hop, field


def window_plan(
    n: int, window: int, hop: int, frame_hop: int, n_frames: Callable[[int], int]
) -> list[tuple[int, int, int, int]]:
    """``(start, end, first_kept, last_kept + 1)`` per window of an ``n``-sample clip.

    Window starts are multiples of ``hop`` (itself a multiple of ``frame_hop``); ``first_kept`` /
    ``last_kept`` index the window's own frames (``n_frames(length)`` of them). In an overlap,
    frames up to the middle stay with the earlier window, the rest go to the later one.
    """
    starts = [0]
    while starts[-1] + window < n:
        starts.append(starts[-1] + hop)
    plan: list[tuple[int, int, int, int, int]] = []  # + kept end on the clip's grid
    for i, s in enumerate(starts):
        e = min(s + window, n)
        g0 = s // frame_hop  # the window's first frame on the clip's frame grid
        f = int(n_frames(e - s))
        lo = 0 if i == 0 else plan[-1][4] - g0
        hi = f
        if i + 1 < len(starts):  # split the overlap with the next window
            nxt = starts[i + 1] // frame_hop
            hi = min(f, (nxt + g0 + f) // 2 - g0)
        plan.append((s, e, lo, hi, g0 + hi))
    return [p[:4] for p in plan]


class SslSpeechSet(AudioFeatureSet):
    """Base of the three families: ``family`` names the transformers model class."""

    family: ClassVar[str] = ""
    model_class: ClassVar[str] = ""
    default_model: ClassVar[str] = ""

    default_config: ClassVar[dict[str, Any]] = {
        "sample_rate": 16000,
        "model": "",
        "revision": None,
        "backbone_weights": None,
        "layers": "all",
        "store_dtype": "float16",
        "normalize": None,
        "window_s": 20.0,
        "overlap_s": 2.0,
        "pool_frames": 1,
        "precision": "auto",
        "batch_size": 8,
        "pad_short": True,
    }
    config_params: ClassVar[dict[str, Param]] = {
        "sample_rate": Param(choices=(16000,)),
        "revision": Param(types=(str,)),
        "backbone_weights": Param(types=(str,)),
        "layers": Param(types=(str, list)),
        "store_dtype": Param(choices=("float16", "float32")),
        "normalize": Param(types=(bool,)),
        "window_s": Param(above=0, max=600),
        "overlap_s": Param(min=0, max=60),
        "pool_frames": Param(min=1, max=100),
        "precision": Param(choices=("auto", "float32", "float16", "bfloat16")),
        "batch_size": Param(min=1, max=4096),
    }

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls.default_config = {**SslSpeechSet.default_config, "model": cls.default_model}

    def __init__(self, config: Any = None, device: str = "cpu", **kw: Any) -> None:
        super().__init__(config, device, **kw)
        if find_spec("transformers") is None:  # refuse before any clip, like the [smile] sets
            raise FeatureConfigError(f"feature set {self.name} {INSTALL_HINT}")
        self._net: Any = None
        self._folder: Path | None = None
        self._meta: dict[str, Any] | None = None

    def validate(self) -> None:
        super().validate()
        c = self.config
        layers = c["layers"]
        if isinstance(layers, str) and layers not in ("all", "last"):
            raise FeatureConfigError(
                f"{self.name}: layers must be all, last or a list of layer "
                f"indices (0 = CNN embedding), got {layers!r}"
            )
        if isinstance(layers, list) and (
            not layers
            or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in layers)
        ):
            raise FeatureConfigError(
                f"{self.name}: layers must list layer indices >= 0, got {layers!r}"
            )
        if self._samples(c["overlap_s"]) >= self._samples(c["window_s"]):
            raise FeatureConfigError(f"{self.name}: overlap_s must be shorter than window_s")
        if self._samples(c["overlap_s"]) < 480:
            raise FeatureConfigError(
                f"{self.name}: overlap_s must be >= 0.03 (one frame's 25 ms "
                "receptive field), so every frame lies inside one window"
            )
        if not str(c["model"]):
            raise FeatureConfigError(
                f"{self.name}: model must name a hub repository (e.g. {self.default_model})"
            )

    def _samples(self, seconds: float) -> int:
        """Seconds -> samples on the 320-sample frame grid (the three families' CNN hop)."""
        return int(round(float(seconds) * self.sample_rate / 320)) * 320

    # ------------------------------------------------------------------ weights
    @property
    def env_var(self) -> str:
        return settings.weights_var(self.name)

    def cache_folder(self) -> Path:
        rev = self.config["revision"] or "main"
        return (
            cache_dir() / "weights" / "hf" / f"{str(self.config['model']).replace('/', '--')}@{rev}"
        )

    def folder(self) -> Path:
        """The local weights folder; downloads only with ``AVEMO_ALLOW_DOWNLOAD=1``."""
        if self._folder is not None:
            return self._folder
        user = self.config["backbone_weights"] or settings.current().weights_override(self.env_var)
        if user:
            p = Path(user).expanduser()
            if not (p / "config.json").is_file():
                key = "backbone_weights" if self.config["backbone_weights"] else self.env_var
                raise MissingWeightsError(
                    f"{self.name}: {key} {p} is not a model folder (no config.json): give the folder "
                    f"that `save_pretrained` or `hf download {self.config['model']} "
                    "--local-dir DIR` wrote"
                )
            self._folder = p
            return p
        cached = self.cache_folder()
        if not (cached / "config.json").is_file():
            if not settings.current().allow_download:
                raise MissingWeightsError(
                    f"{self.name}: weights of {self.config['model']} are not available offline. "
                    f"Run `hf download {self.config['model']} --local-dir DIR` where the "
                    f"hub is reachable and point {self.env_var} (or backbone_weights) at DIR, or set "
                    f"AVEMO_ALLOW_DOWNLOAD=1 when online (cached in {cached})."
                )
            self._download(cached)
        self._folder = cached
        return cached

    def _download(self, folder: Path) -> None:  # pragma: no cover - needs the hub
        from huggingface_hub import HfApi, snapshot_download

        model, rev = str(self.config["model"]), self.config["revision"]
        commit = HfApi().model_info(model, revision=rev).sha
        tmp = folder.with_name(folder.name + ".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        snapshot_download(
            model,
            revision=commit,
            local_dir=tmp,
            allow_patterns=["*.json", "*.safetensors", "*.bin"],
        )
        (tmp / SOURCE_FILE).write_text(
            json.dumps({"repository": model, "revision": rev, "commit": commit})
        )
        os.replace(tmp, folder)

    def weights(self) -> dict[str, str]:
        """sha256 of every weight / config file, and the hub commit of a downloaded folder."""
        folder = self.folder()
        out = {f"{self.name}/{k}": v for k, v in folder_digests(folder).items()}
        src = folder / SOURCE_FILE
        if src.is_file():
            s = json.loads(src.read_text())
            out[f"{self.name}/source"] = f"{s['repository']}@{s['commit']}"
        return out

    def provenance(self) -> dict[str, Any]:
        """As every set's, plus the versions of the library that runs the model."""
        import importlib.metadata as md

        prov = super().provenance()
        for pkg in ("transformers", "safetensors"):
            try:
                prov["versions"][pkg] = md.version(pkg)
            except md.PackageNotFoundError:
                pass
        return prov

    def meta(self) -> dict[str, Any]:
        """The model's config.json (layer count, width, CNN) without loading the network."""
        if self._meta is None:
            self._meta = json.loads((self.folder() / "config.json").read_text())
        return self._meta

    @property
    def n_hidden(self) -> int:
        """Hidden states the model returns: the embedding and one per transformer layer."""
        return int(self.meta()["num_hidden_layers"]) + 1

    def layer_indices(self) -> list[int] | None:
        """Indices into the hidden states kept (None: only the last, rows [D])."""
        layers = self.config["layers"]
        if layers == "last":
            return None
        idx = list(range(self.n_hidden)) if layers == "all" else [int(i) for i in layers]
        bad = [i for i in idx if i >= self.n_hidden]
        if bad:
            raise FeatureConfigError(
                f"{self.name}: layers {bad} out of range: the model has hidden "
                f"states 0..{self.n_hidden - 1}"
            )
        return idx

    def row_shape(self) -> tuple[int, ...]:
        idx, d = self.layer_indices(), int(self.meta()["hidden_size"])
        return (d,) if idx is None else (len(idx), d)

    @property
    def rate_hz(self) -> float:
        return self.sample_rate / 320 / int(self.config["pool_frames"])

    @property
    def normalize(self) -> bool:
        if self.config["normalize"] is not None:
            return bool(self.config["normalize"])
        pre = self.folder() / "preprocessor_config.json"
        return (
            bool(json.loads(pre.read_text()).get("do_normalize", False)) if pre.is_file() else False
        )

    def net(self) -> Any:
        """The transformers model in eval mode on the device (loaded once)."""
        if self._net is None:
            import torch
            import transformers

            folder = self.folder()
            self.layer_indices()  # a bad index is a config error before any clip is read
            transformers.utils.logging.disable_progress_bar()  # one bar per load is noise here
            cls = getattr(transformers, self.model_class)
            net = cls.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
            hop, field = frame_geometry(net.config.conv_kernel, net.config.conv_stride)
            if hop != 320:
                raise FeatureConfigError(
                    f"{self.name}: {folder} has a CNN hop of {hop} samples; "
                    "these sets expect the 320 (20 ms) of the published models"
                )
            self.field = field
            self._net = net.eval().to(torch.device(self.device))
        return self._net

    def n_frames(self, n: int) -> int:
        return int(self.net()._get_feat_extract_output_lengths(int(n)))

    # ------------------------------------------------------------------ compute
    def _autocast(self) -> Any:
        import contextlib

        import torch

        p, dev = self.config["precision"], torch.device(self.device)
        if p == "auto":
            p = "float16" if dev.type == "cuda" else "float32"
        if p == "float32":
            return contextlib.nullcontext()
        return torch.autocast(dev.type, dtype=getattr(torch, p))

    def _run(self, pieces: list[np.ndarray]) -> list[np.ndarray]:
        """Hidden states ``[F, L, D]`` (kept layers) of each piece; batches as the module doc says."""
        import torch

        net = self.net()
        dev = next(net.parameters()).device
        masked = net.config.feat_extract_norm == "layer"  # GroupNorm CNNs: equal lengths only
        order = sorted(range(len(pieces)), key=lambda i: -len(pieces[i]))
        idx = self.layer_indices()
        out: dict[int, np.ndarray] = {}
        bs, at = int(self.config["batch_size"]), 0
        while at < len(order):
            group = [order[at]]
            while len(group) < bs and at + len(group) < len(order):
                nxt = order[at + len(group)]
                if not masked and len(pieces[nxt]) != len(pieces[group[0]]):
                    break
                group.append(nxt)
            at += len(group)
            n = len(pieces[group[0]])
            x = np.zeros((len(group), n), np.float32)
            att = np.zeros((len(group), n), np.int64)
            for r, i in enumerate(group):
                x[r, : len(pieces[i])] = pieces[i]
                att[r, : len(pieces[i])] = 1
            kw = {"attention_mask": torch.from_numpy(att).to(dev)} if masked else {}
            with torch.inference_mode(), self._autocast():
                hs = net(torch.from_numpy(x).to(dev), output_hidden_states=True, **kw).hidden_states
                h = hs[-1][:, :, None] if idx is None else torch.stack([hs[i] for i in idx], 2)
                h = h.float().cpu().numpy()  # [B, F, L, D]
            for r, i in enumerate(group):
                out[i] = h[r, : self.n_frames(len(pieces[i]))]
        return [out[i] for i in range(len(pieces))]

    def compute(self, signals: Sequence[np.ndarray]) -> list[Result]:
        self.net()
        c = self.config
        win, hop = (
            self._samples(c["window_s"]),
            self._samples(c["window_s"]) - self._samples(c["overlap_s"]),
        )
        pieces: list[np.ndarray] = []
        plans: list[tuple[int, list[tuple[int, int, int, int]]]] = []
        for s in signals:
            s = np.asarray(s, np.float32)
            if len(s) < self.field:
                s = np.pad(s, (0, self.field - len(s))) if c["pad_short"] else s[:0]
            if self.normalize and len(s):
                s = (s - s.mean()) / np.sqrt(s.var() + 1e-7)
            plan = window_plan(len(s), win, hop, 320, self.n_frames) if len(s) else []
            plans.append((len(pieces), plan))
            pieces += [s[a:b] for a, b, _, _ in plan]
        hidden = self._run(pieces)
        shape, k = self.row_shape(), int(c["pool_frames"])
        dtype = np.dtype(c["store_dtype"])
        out = []
        for first, plan in plans:
            rows = [hidden[first + j][lo:hi] for j, (_, _, lo, hi) in enumerate(plan)]
            v = np.concatenate(rows) if rows else np.zeros((0, *shape), np.float32)
            t = (np.arange(len(v)) * 320 + self.field / 2) / self.sample_rate
            if k > 1 and len(v):
                groups = np.arange(len(v)) // k
                counts = np.bincount(groups)[:, None]
                v = np.add.reduceat(v, np.arange(0, len(v), k), axis=0) / counts[..., None]
                t = np.add.reduceat(t, np.arange(0, len(t), k)) / counts[:, 0]
            out.append((v.reshape(len(v), *shape).astype(dtype), t))
        return out

    def extract(self, clips: Any) -> Any:
        self.net()  # weights first: a missing model is one message before any clip is read
        yield from super().extract(clips)


def _family(name: str, model_class: str, default_model: str, doc: str) -> type[SslSpeechSet]:
    cls = type(
        f"Speech{model_class.removesuffix('Model')}",
        (SslSpeechSet,),
        {
            "__doc__": doc,
            "family": name,
            "model_class": model_class,
            "default_model": default_model,
            "__module__": __name__,
        },
    )
    return FEATURE_SETS.register(f"speech_{name}")(cls)


SpeechWavLM = _family(
    "wavlm",
    "WavLMModel",
    "microsoft/wavlm-base-plus",
    "WavLM (transformers): every hidden layer [L+1, D] at 50 Hz, float16 ([ssl] extra).",
)
SpeechHubert = _family(
    "hubert",
    "HubertModel",
    "facebook/hubert-base-ls960",
    "HuBERT (transformers): every hidden layer [L+1, D] at 50 Hz, float16 ([ssl] extra).",
)
SpeechWav2Vec2 = _family(
    "wav2vec2",
    "Wav2Vec2Model",
    "facebook/wav2vec2-base",
    "wav2vec 2.0 (transformers): every hidden layer [L+1, D] at 50 Hz, float16 ([ssl] extra).",
)

SSL_SETS = (SpeechWavLM, SpeechHubert, SpeechWav2Vec2)
