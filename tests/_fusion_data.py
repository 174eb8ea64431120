"""Small real feature files + manifests for the fusion tests (written with the real store)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from avemo.data.store import ClipFeatures, make_provenance, write_clips
from avemo.fusion.spec import TaskSpec

CLASSES = ["angry", "happy", "sad"]


def write_set(path: Path, name: str, clips: list[ClipFeatures], rate: float, **config) -> Path:
    prov = make_provenance(name, {"rate": rate, **config}, {"w.pt": "0" * 8}, rate_hz=rate)
    write_clips(path, clips, prov)
    return path


def clip_corpus(
    tmp: Path,
    n_clips: int = 30,
    n_subjects: int = 6,
    seed: int = 0,
    bad: dict[str, str] | None = None,
) -> dict:
    """Clip-level 3-class corpus: class shifts the mean of both modalities (learnable)."""
    rng = np.random.default_rng(seed)
    face, audio, rows = [], [], []
    bad = bad or {}
    for i in range(n_clips):
        cid = f"c{i:03d}"
        y = i % 3
        g = i // 3  # each group of 3 consecutive clips holds every class
        subj = f"s{g % n_subjects}"
        split = {3: "val", 4: "test"}.get(g % 5, "train")
        tf, ta = int(rng.integers(5, 12)), int(rng.integers(8, 20))
        fv = rng.normal(size=(tf, 8)).astype(np.float32) + 2.0 * y
        av = rng.normal(size=(ta, 6)).astype(np.float32) - 1.5 * y
        fmask = np.ones(tf, bool)
        fmask[rng.random(tf) < 0.2] = False
        if bad.get(cid) in ("no_face", "no_video"):
            face.append(ClipFeatures.empty(cid, (8,), bad[cid], f"{bad[cid]} (test corpus)"))
        else:
            face.append(ClipFeatures(cid, fv, np.arange(tf) / 25.0, fmask))
        if bad.get(cid) == "no_audio":
            audio.append(ClipFeatures.empty(cid, (6,), "no_audio", "no audio stream (test corpus)"))
        else:
            audio.append(ClipFeatures(cid, av, np.arange(ta) / 10.0, np.ones(ta, bool)))
        rows.append(
            {
                "clip_id": cid,
                "video": f"{cid}.mp4",
                "audio": f"{cid}.wav",
                "split": split,
                "subject": subj,
                "label": CLASSES[y],
            }
        )
    man = tmp / "manifest.csv"
    pd.DataFrame(rows).to_csv(man, index=False)
    return {
        "manifest": man,
        "face": write_set(tmp / "face_test.h5", "face_test", face, 25.0, dim=8),
        "audio": write_set(tmp / "audio_test.h5", "audio_test", audio, 10.0, dim=6),
    }


def frame_corpus(tmp: Path, n_clips: int = 8, seed: int = 0) -> dict:
    """Frame-level V/A corpus: valence follows face[:, 0], arousal follows audio[:, 0]."""
    rng = np.random.default_rng(seed)
    face, audio, rows = [], [], []
    (tmp / "ann").mkdir(exist_ok=True)
    for i in range(n_clips):
        cid = f"v{i:02d}"
        n = int(rng.integers(40, 130))  # label frames at 10 Hz
        t = np.arange(n) / 10.0
        f0 = np.sin(t * (0.5 + 0.2 * i)) + 0.1 * rng.normal(size=n)
        fv = np.concatenate([f0[:, None], rng.normal(size=(n, 3))], 1).astype(np.float32)
        ta = np.arange(2 * n) / 20.0
        a0 = np.cos(ta * (0.3 + 0.1 * i))
        av = np.concatenate([a0[:, None], rng.normal(size=(2 * n, 4))], 1).astype(np.float32)
        face.append(ClipFeatures(cid, fv, t + 0.01, np.ones(n, bool)))
        audio.append(ClipFeatures(cid, av, ta, np.ones(2 * n, bool)))
        val = np.tanh(f0)
        aro = np.tanh(np.cos(t * (0.3 + 0.1 * i)))
        val[:3] = np.nan  # unlabelled frames
        ann = tmp / "ann" / f"{cid}.csv"
        pd.DataFrame({"time": t, "valence": val, "arousal": aro}).to_csv(ann, index=False)
        rows.append(
            {
                "clip_id": cid,
                "video": f"{cid}.mp4",
                "split": ["train", "train", "val", "test"][i % 4] if i < 4 else "train",
                "subject": f"s{i}",
                "annotation": f"ann/{cid}.csv",
            }
        )
    man = tmp / "manifest.csv"
    pd.DataFrame(rows).to_csv(man, index=False)
    return {
        "manifest": man,
        "face": write_set(tmp / "face_va.h5", "face_va", face, 10.0, dim=4),
        "audio": write_set(tmp / "audio_va.h5", "audio_va", audio, 20.0, dim=5),
    }


class TinyFusion(nn.Module):
    """Masked mean (clip) or per-frame concat (frame) -> linear; stands in for the zoo in tests."""

    def __init__(self, inputs: dict, task: TaskSpec, hidden: int = 16) -> None:
        super().__init__()
        self.mods = sorted(inputs)
        self.task = task
        d = sum(int(np.prod(s)) for s in inputs.values())
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, task.n_out))
        self.attention: dict = {}

    def forward(self, batch: dict) -> torch.Tensor:
        feats = []
        for m in self.mods:
            x, mk = batch[m].flatten(2), batch[f"{m}_mask"].float()
            if self.task.frame:
                x = x * mk[..., None]
            else:
                x = (x * mk[..., None]).sum(1) / mk.sum(1, keepdim=True).clamp_min(1)
            feats.append(x)
        return self.net(torch.cat(feats, -1))


def register_tiny() -> str:
    from avemo.fusion.registry import MODELS

    if "test_tiny" not in MODELS:
        MODELS.register("test_tiny", "tests only")(TinyFusion)
    return "test_tiny"


def clip_config(c: dict, tmp: Path, **over) -> dict:
    cfg = {
        "name": "t_clip",
        "seed": 1,
        "data": {
            "manifest": str(c["manifest"]),
            "features": {"face": str(c["face"]), "audio": str(c["audio"])},
            "batch_size": 8,
        },
        "task": {"type": "clip"},
        "model": {"name": register_tiny()},
        "optim": {"name": "adam", "lr": 0.01},
        "trainer": {"max_epochs": 3, "accelerator": "cpu"},
        "output": {"dir": str(tmp / "runs")},
    }
    for k, v in over.items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
    return cfg


def quiet_run_config(
    corpus: tuple[dict, Path], default_model: dict, tmp: Path | None = None, **over
):
    """A validated ``clip_config`` run config on a ``(clip_corpus, folder)`` fixture pair:
    ``default_model`` unless ``over`` names a model, no plots, quiet, runs under ``tmp`` (default the
    corpus folder)."""
    from avemo.fusion.config import load_config

    c, base = corpus
    tmp = tmp or base
    over.setdefault("output", {"dir": str(tmp / "runs"), "plots": False, "verbose": False})
    over.setdefault("model", default_model)
    return load_config(clip_config(c, tmp, **over))
