"""Helpers for the workflow tests: a small generated corpus in the real HDF5 store, and a
minimal trainer with ``train_from_config``'s signature (used to exercise the grid machinery
independently of the model zoo; the end-to-end tests use the real trainer)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from avemo.data.store import ClipFeatures, make_provenance, write_clips

CLASSES = ["angry", "happy", "sad"]


def make_corpus(root: Path, n_clips: int = 36, n_subjects: int = 6, dims: Mapping[str, int] | None = None,
                seed: int = 0, media: Path | None = None) -> Path:
    """Manifest + one feature file per modality; the class shows in both modalities' means."""
    dims = dict(dims or {"face": 8, "audio": 6})
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    feats = root / "features"
    feats.mkdir(exist_ok=True)
    labels = [CLASSES[i % len(CLASSES)] for i in range(n_clips)]
    ids = [f"clip{i:03d}" for i in range(n_clips)]
    centres = {m: rng.normal(0, 1, (len(CLASSES), d)) for m, d in dims.items()}
    for m, d in dims.items():
        clips = []
        for cid, lab in zip(ids, labels, strict=True):
            t = int(rng.integers(5, 12))
            x = centres[m][CLASSES.index(lab)] + rng.normal(0, 1.2, (t, d))
            clips.append(ClipFeatures(cid, x.astype(np.float32), np.arange(t) / 10.0, np.ones(t, bool)))
        write_clips(feats / f"{m}.h5", clips, make_provenance(f"gen_{m}", {"dim": d}, rate_hz=10.0))
    splits = ["train", "train", "train", "val", "test"]
    df = pd.DataFrame({
        "clip_id": ids,
        "audio": [str(media) if media else "x.wav"] * n_clips,
        "split": [splits[i % len(splits)] for i in range(n_clips)],
        "subject": [f"s{i % n_subjects}" for i in range(n_clips)],
        "label": labels,
    })
    df.to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def standin_train(config: Any, overrides: Any = None, *, feature_cache: dict | None = None,
                  run_dir: Path | None = None) -> dict[str, Any]:
    """Mean-pool every modality, train a linear classifier (seeded); clip accuracy, UAR and the
    test confusion matrix. ``trainer.sleep_s`` slows a run down for the kill/resume test."""
    from avemo.data.manifest import load_manifest
    from avemo.data.store import FeatureFile
    from avemo.fusion.config import load_config
    from avemo.fusion.splits import make_splits, write_splits

    cfg = load_config(config, overrides)
    cache = feature_cache if feature_cache is not None else {}
    df = load_manifest(cfg["data"]["manifest"], check_files=False)
    pooled = []
    for _mod, path in sorted(cfg["data"]["features"].items()):
        key = ("standin", str(Path(path).resolve()))
        if key not in cache:
            with FeatureFile(path) as ff:
                ra = ff.load_all()
            cache[key] = {c: ra.values[ra.offsets[i]:ra.offsets[i + 1]].mean(0) for i, c in enumerate(ra.clip_ids)}
        pooled.append(np.stack([cache[key][c] for c in df["clip_id"]]))
    x = torch.tensor(np.concatenate(pooled, 1), dtype=torch.float32)
    classes = sorted(df["label"].unique())
    y = torch.tensor([classes.index(v) for v in df["label"]])
    sp = make_splits(df, cfg["split"], seed=int(cfg["seed"]))
    pos = {c: i for i, c in enumerate(df["clip_id"])}
    idx = {p: torch.tensor([pos[c] for c in ids], dtype=torch.long) for p, ids in sp["partitions"].items()}
    torch.manual_seed(int(cfg["seed"]))
    lin = torch.nn.Linear(x.shape[1], len(classes))
    opt = torch.optim.Adam(lin.parameters(), lr=float(cfg["optim"]["lr"]))
    for _ in range(int(cfg["trainer"]["max_epochs"])):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(lin(x[idx["train"]]), y[idx["train"]]).backward()
        opt.step()
    time.sleep(float(cfg["trainer"].get("sleep_s", 0.0)))
    with torch.no_grad():
        pred = lin(x[idx["test"]]).argmax(1)
    truth = y[idx["test"]]
    cm = np.zeros((len(classes), len(classes)), int)
    for a, b in zip(truth.tolist(), pred.tolist(), strict=True):
        cm[a, b] += 1
    recalls = [cm[i, i] / cm[i].sum() for i in range(len(classes)) if cm[i].sum()]
    metrics = {"test/acc": float(np.trace(cm) / cm.sum()), "test/uar": float(np.mean(recalls)),
               "test/confusion": cm.tolist(), "classes": classes}
    run_dir = Path(run_dir or "runs/standin")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_splits(sp, df, run_dir)
    preds = pd.DataFrame({"clip_id": df["clip_id"].iloc[idx["test"].numpy()].tolist(),
                          "label": [classes[i] for i in truth.tolist()],
                          "pred": [classes[i] for i in pred.tolist()]})
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return {"run_dir": run_dir, "metrics": metrics, "predictions": preds}
