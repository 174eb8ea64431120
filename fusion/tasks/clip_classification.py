"""Per-clip classification: one ``label`` per clip; accuracy, UAR, macro-F1, confusion."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from avemo.fusion import metrics as M
from avemo.fusion.config import ConfigError, EvalConfig
from avemo.fusion.ensemble import merge_class_scores
from avemo.fusion.features import FeatureFiles
from avemo.fusion.index import ClipIndex, build_clip_index
from avemo.fusion.metrics import accuracy, uar
from avemo.fusion.plots import clip_bars, confusion
from avemo.fusion.registry import TASKS
from avemo.fusion.spec import TaskSpec
from avemo.fusion.tasks.base import Task


@TASKS.register("clip")
class ClipClassification(Task):
    """One class label per clip (manifest ``label``); cross-entropy; val/accuracy."""

    level = "clip"
    default_loss = "cross_entropy"
    default_monitor = "val/accuracy"
    label_column = "label"
    prediction_file = "predictions.csv"

    def select(self, df: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
        df = super().select(df, notes)
        classes = (
            self.data.classes or df.attrs.get("classes") or sorted(df["label"].unique().tolist())
        )
        self.classes = [str(c) for c in classes]
        unknown = sorted(set(df["label"].astype(str)) - set(self.classes))
        if unknown:
            raise ConfigError(f"labels {unknown} are not in data.classes {self.classes}")
        self.n_out = len(self.classes)
        return df

    def split_labels(self, manifest: pd.DataFrame) -> list[str] | None:
        return manifest["label"].astype(str).tolist()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "classes": self.classes}

    def restore(self, described: Mapping[str, Any]) -> None:
        if "classes" in described:
            self.classes = [str(c) for c in described["classes"]]
            self.n_out = len(self.classes)
        super().restore(described)

    def spec(self, modalities: Sequence[str] = ()) -> TaskSpec:
        return TaskSpec(
            self.level, self.n_out, classes=tuple(self.classes), modalities=tuple(modalities)
        )

    def build_index(
        self, manifest: pd.DataFrame, features: FeatureFiles, cache: dict | None
    ) -> ClipIndex:
        cls = {c: i for i, c in enumerate(self.classes)}
        y = torch.tensor([cls[str(x)] for x in manifest["label"]], dtype=torch.long)
        return build_clip_index(
            manifest["clip_id"].astype(str).tolist(), features, y, self.data.max_rows
        )

    def unlabelled_index(self, clip_ids: Sequence[str], features: FeatureFiles) -> ClipIndex:
        y = torch.zeros(len(clip_ids), dtype=torch.long)
        return build_clip_index(list(clip_ids), features, y, self.data.max_rows)

    def class_weights(self, spec: Any, train_y: Tensor) -> list[float]:
        """``balanced`` -> N / (C * count_c) from the training labels; a list is used as given."""
        n = self.n_out
        if spec == "balanced":
            counts = torch.bincount(train_y.cpu(), minlength=n).double()
            return (counts.sum() / (n * counts.clamp_min(1))).tolist()
        w = [float(v) for v in spec]
        if len(w) != n:
            raise ConfigError(f"loss.class_weights has {len(w)} values for {n} classes")
        return w

    def assemble(self, index: Any, seq: Tensor, out: Tensor) -> dict[str, Any]:
        res = super().assemble(index, seq, out)
        res["scores"] = res.pop("out")
        return res

    def score(self, res: Mapping[str, Any], ev: EvalConfig | None = None) -> dict[str, Any]:
        if not res:
            return {}

        return M.classification_metrics(np.asarray(res["scores"]), np.asarray(res["y"]), self.n_out)

    def prediction_table(self, res: Mapping[str, Any], partition: str) -> pd.DataFrame:
        if not res:
            return pd.DataFrame()
        scores = self.probabilities(res)
        df = pd.DataFrame(
            {
                "clip_id": res["clip_ids"],
                "partition": partition,
                "label": [self.classes[i] for i in res["y"]],
                "pred": [self.classes[i] for i in scores.argmax(1)],
            }
        )
        for j, c in enumerate(self.classes):
            df[f"p_{c}"] = scores[:, j]
        return df

    def probabilities(self, res: Mapping[str, Any]) -> np.ndarray:
        """Softmax of the assembled scores, ``[clips, classes]``."""
        return torch.from_numpy(np.asarray(res["scores"], np.float32)).softmax(-1).numpy()

    def unlabelled_table(
        self, res: Mapping[str, Any], ev: EvalConfig | None, dm: Any
    ) -> pd.DataFrame:
        scores = self.probabilities(res)
        body = pd.DataFrame(
            {
                "clip_id": res["clip_ids"],
                "pred": [self.classes[i] for i in scores.argmax(1)],
                "top_p": scores.max(1),
            }
        )
        for j, c in enumerate(self.classes):
            body[f"p_{c}"] = scores[:, j]
        return body

    def clip_summary(self, table: pd.DataFrame) -> pd.DataFrame:
        """The predicted class and its probability (and the label, when the input had one)."""
        return table[[c for c in ("clip_id", "label", "pred", "top_p") if c in table]]

    def plot_clip(
        self, rows: pd.DataFrame, clip_id: str, modalities: Sequence[str], path: Path
    ) -> Path:
        """The class probabilities as bars; the title names the prediction (and the truth)."""
        row = rows.iloc[0]
        title = f"{clip_id}: {row.get('pred')}"
        if isinstance(row.get("label"), str):
            title += f" (true: {row['label']})"
        vals = [row.get(f"p_{c}") for c in self.classes]
        return clip_bars(self.classes, vals, title, row.get("missing"), path, ylim=(0.0, 1.0))

    def test_confusion(self, run_dir: Path) -> np.ndarray | None:
        """A run's test confusion matrix (rows = true class): from its prediction table, else
        the ``test/confusion`` (or ``val/confusion``) its ``DONE.json`` recorded."""
        df = self.read_predictions(run_dir)
        if df is not None and len(df):
            if (df["partition"] == "test").any():
                df = df[df["partition"] == "test"]
            idx = {c: i for i, c in enumerate(self.classes)}
            cm = np.zeros((len(idx), len(idx)))
            for a, b in zip(df["label"].astype(str), df["pred"].astype(str), strict=True):
                if a in idx and b in idx:
                    cm[idx[a], idx[b]] += 1
            return cm
        done = Path(run_dir) / "DONE.json"
        if done.is_file():
            rec = json.loads(done.read_text())
            found = {**rec.get("extra", {}), **rec.get("metrics", {})}
            for key in ("test/confusion", "val/confusion"):
                v = found.get(key)
                if isinstance(v, list) and v and isinstance(v[0], list):
                    return np.asarray(v, float)
        return None

    def report_figures(self, run_dirs: Sequence[Path], title: str, stem: Path) -> list[Path]:
        """The test confusion matrix summed over the runs."""
        total = None
        for d in run_dirs:
            cm = self.test_confusion(d)
            if cm is None:
                continue
            if total is None:
                total = cm.copy()
            elif cm.shape == total.shape:
                total += cm
        if total is None:
            return []
        stem.parent.mkdir(parents=True, exist_ok=True)
        path = stem.with_name(f"confusion_{stem.name}.png")
        return [confusion(total, self.classes, f"{title} (summed over {len(run_dirs)} runs)", path)]

    def plot(self, out: Path, table: pd.DataFrame, extra: Mapping[str, Any]) -> list[Path]:
        made = []
        for key, cm in extra.items():
            if key.endswith("/confusion"):
                part = key.split("/")[0]
                made.append(
                    confusion(
                        np.asarray(cm),
                        self.classes,
                        f"{part} confusion",
                        out / f"confusion_{part}.png",
                    )
                )
        return made

    def merge(
        self,
        tables: Sequence[pd.DataFrame],
        method: str = "mean",
        smooth: Mapping[str, int] | None = None,
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Mean of the class probabilities; accuracy / UAR of every model and of the merge."""
        base = tables[0].sort_values("clip_id", kind="stable").reset_index(drop=True)
        cols = [f"p_{c}" for c in self.classes]
        probs = []
        for r, t in enumerate(tables):
            m = base[["clip_id"]].merge(t, on="clip_id", how="left", validate="one_to_one")
            if m[cols].isna().any(axis=None):
                raise ValueError(f"model {r} lacks predictions for clips of model 0")
            probs.append(m[cols].to_numpy(np.float64))
        idx = {c: i for i, c in enumerate(self.classes)}
        y = np.array([idx[str(v)] for v in base["label"]])
        merged = merge_class_scores(probs)
        rows = [
            {
                "what": f"fold {i}",
                "accuracy": float(accuracy(p, y)),
                "uar": float(uar(p, y, p.shape[1])),
            }
            for i, p in enumerate(probs)
        ]
        rows.append(
            {
                "what": "mean of probabilities",
                "accuracy": float(accuracy(merged, y)),
                "uar": float(uar(merged, y, merged.shape[1])),
            }
        )
        out = pd.DataFrame(
            {
                "clip_id": base["clip_id"],
                "label": base["label"],
                "pred": [self.classes[i] for i in merged.argmax(1)],
            }
        )
        for j, c in enumerate(cols):
            out[c] = merged[:, j]
        return out, pd.DataFrame(rows)
