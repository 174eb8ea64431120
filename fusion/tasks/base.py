"""The ``Task`` contract: everything that depends on what a run predicts lives in a subclass.

A task turns manifest rows into targets and an index of samples (``fusion.index``), names the
default loss and monitor, turns assembled model outputs into metrics, prediction tables and
plots, and merges several models' predictions. The datamodule, the LightningModule, the
trainer, ``avemo predict``, ``avemo report`` and ``avemo merge`` only call these methods; none
of them asks which task it is (``tests/test_fusion_tasks.py`` scans the whole package for
branches on the task level outside ``fusion/tasks``). Models get ``spec()``, a frozen
``fusion.spec.TaskSpec``, never the task object. Register a new task with ``@TASKS.register("name")`` (or an entry point, see
``avemo.fusion.registry``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from torch import Tensor, nn

from avemo.fusion.config import (
    ConfigError,
    DataConfig,
    EvalConfig,
    LossConfig,
    RunConfig,
    TrainerConfig,
    run_config,
    section,
)
from avemo.fusion.ensemble import merge_frame_predictions
from avemo.fusion.evaluate import regression_metrics, smooth_per_clip
from avemo.fusion.features import FeatureFiles
from avemo.fusion.registry import LOSS_ALIASES, LOSSES, TASKS, load_all
from avemo.fusion.spec import Level, TaskSpec


class Task:
    """Base class of ``TASKS`` entries.

    ``level`` is what the model outputs (``clip``: one vector per clip, ``frame``: one per
    label frame; models see it as ``spec().level``); ``default_loss`` /
    ``default_monitor`` apply when the config leaves ``loss.name`` / ``trainer.monitor`` unset.
    """

    level: ClassVar[Level] = "clip"
    default_loss: ClassVar[str] = "cross_entropy"
    default_monitor: ClassVar[str] = "val/accuracy"
    label_column: ClassVar[str] = "label"
    prediction_file: ClassVar[str] = "predictions.csv"
    #: the model's temporal attention belongs to one clip (a frame task's windows share one
    #: timeline, so its weights are per window): ``avemo predict --attention`` / report plots
    attention_per_clip: ClassVar[bool] = True

    def __init__(self, data: DataConfig) -> None:
        self.data = data
        self.n_out = 0

    @property
    def name(self) -> str:
        """The ``task.type`` this class is registered under."""
        return TASKS.name_of(self)

    # ------------------------------------------------------------------ data

    def select(self, df: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
        """Manifest rows that carry this task's labels (sets ``n_out``)."""
        col = self.label_column
        if col not in df.columns:
            raise ConfigError(f"task.type={self.name} needs a {col} column in the manifest")
        keep = df[col].notna()
        if (~keep).sum():
            notes.append(f"{int((~keep).sum())} manifest clips have no {col} and are not used")
        return df[keep].copy()

    def split_labels(self, manifest: pd.DataFrame) -> list[str] | None:
        """One class label per manifest row for stratified folds and the coverage check, or
        None when the task has no classes (regression: folds are not stratified)."""
        return None

    def build_index(
        self, manifest: pd.DataFrame, features: FeatureFiles, cache: dict | None
    ) -> Any:
        """The run's ``fusion.index`` object (sequences, positions, labels, assembly)."""
        raise NotImplementedError

    def train_targets(self, index: Any, train_seqs: Tensor) -> Tensor:
        """Targets of the training sequences (class weights are computed from these)."""
        return index.y[train_seqs]

    def spec(self, modalities: Sequence[str] = ()) -> TaskSpec:
        """What ``MODELS.build(task=...)`` gets (``select`` / ``restore`` first: ``n_out``)."""
        return TaskSpec(self.level, self.n_out, modalities=tuple(modalities))

    def describe(self) -> dict[str, Any]:
        """For ``data_report.json`` (``restore`` reads it back)."""
        return {"type": self.name, "level": self.level, "n_out": self.n_out}

    def restore(self, described: Mapping[str, Any]) -> None:
        """Take back what ``describe`` recorded (a run folder's ``data_report.json``): the
        task of a finished run, without its manifest."""
        self.n_out = int(described.get("n_out") or self.n_out)

    def unlabelled_index(self, clip_ids: Sequence[str], features: FeatureFiles) -> Any:
        """The ``fusion.index`` object over new clips with no labels (``avemo predict``), built
        the way ``build_index`` builds the run's own; label values are placeholders."""
        raise NotImplementedError

    # ------------------------------------------------------------------ training

    def monitor(self, trainer: TrainerConfig | None = None) -> tuple[str, str]:
        """(metric, mode): ``trainer.monitor`` or the task's default; losses/RMSE minimise."""
        mon = (trainer.monitor if trainer is not None else None) or self.default_monitor
        return mon, ("min" if mon.endswith("loss") or "rmse" in mon else "max")

    def build_loss(self, loss: LossConfig, train_y: Tensor) -> nn.Module:
        """The ``LOSSES`` entry named by ``loss.name`` (default: the task's), with its options."""
        lc = loss.options()
        name = loss.name or self.default_loss
        name = LOSS_ALIASES.get(name, name)
        spec = lc.pop("class_weights", None)
        if spec is not None:
            lc["class_weights"] = self.class_weights(spec, train_y)
        return LOSSES.build(name, **lc)

    def class_weights(self, spec: Any, train_y: Tensor) -> list[float]:
        raise ConfigError(f"loss.class_weights is for classification tasks, not task {self.name}")

    def batch_loss(self, loss_fn: nn.Module, out: Tensor, batch: Mapping[str, Tensor]) -> Tensor:
        return loss_fn(out, batch["y"])

    # ------------------------------------------------------------------ evaluation

    def assemble(self, index: Any, seq: Tensor, out: Tensor) -> dict[str, Any]:
        """Per-clip (or per-frame) outputs of a partition; numpy arrays, ``out`` renamed."""
        res = index.assemble(seq, out)
        return {k: (v.cpu().numpy() if isinstance(v, Tensor) else v) for k, v in res.items()}

    def score(self, res: Mapping[str, Any], ev: EvalConfig | None = None) -> dict[str, Any]:
        """Metrics of one assembled partition; ``ev``: the run's ``eval`` section."""
        raise NotImplementedError

    def prediction_table(self, res: Mapping[str, Any], partition: str) -> pd.DataFrame:
        raise NotImplementedError

    def unlabelled_table(
        self, res: Mapping[str, Any], ev: EvalConfig | None, dm: Any
    ) -> pd.DataFrame:
        """``avemo predict``'s table body of assembled outputs over new clips (no truth
        columns): one row per clip, or per timeline frame; ``ev``: the run's ``eval``;
        ``dm``: the datamodule over those clips (``CachedFeatureDataModule.unlabelled``)."""
        raise NotImplementedError

    def clip_summary(self, table: pd.DataFrame) -> pd.DataFrame:
        """One row per clip of ``avemo predict``'s table: what the command prints."""
        raise NotImplementedError

    def write_predictions(self, table: pd.DataFrame, run_dir: Path) -> Path:
        path = Path(run_dir) / self.prediction_file
        if path.suffix == ".parquet":
            table.to_parquet(path, index=False)
        else:
            table.to_csv(path, index=False)
        return path

    def read_predictions(self, run_dir: Path) -> pd.DataFrame | None:
        """The table ``write_predictions`` wrote into a run folder, or None."""
        path = Path(run_dir) / self.prediction_file
        if not path.is_file():
            return None
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)

    def plot(self, out: Path, table: pd.DataFrame, extra: Mapping[str, Any]) -> list[Path]:
        """Task plots of a finished run into ``out`` (learning curves are drawn by the caller)."""
        return []

    def plot_clip(
        self, rows: pd.DataFrame, clip_id: str, modalities: Sequence[str], path: Path
    ) -> Path:
        """One PNG of ``avemo predict``'s rows of one clip (``unlabelled_table`` + ``missing``)."""
        raise NotImplementedError

    def report_figures(self, run_dirs: Sequence[Path], title: str, stem: Path) -> list[Path]:
        """Figures of the test predictions of several runs of one config, for a grid report
        (``avemo report``), written as ``<stem>_*.png``; [] when the runs left nothing to draw."""
        return []

    def sample_names(self, index: Any, seq: Sequence[int]) -> list[str]:
        """A readable name per sequence (report captions)."""
        return [str(index.clip_ids[i]) for i in seq]

    def merge(
        self,
        tables: Sequence[pd.DataFrame],
        method: str = "ccc_centering",
        smooth: Mapping[str, int] | None = None,
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Merge several models' prediction tables of the same clips -> (merged, scores)."""
        raise NotImplementedError


class RegressionTask(Task):
    """Shared by the regression tasks: targets ``data.targets``, CCC/PCC/RMSE per target."""

    default_loss: ClassVar[str] = "ccc"
    default_monitor: ClassVar[str] = "val/ccc"
    merge_key: ClassVar[tuple[str, ...]] = ("clip_id",)
    smooths: ClassVar[bool] = False  # eval.smooth applies (per-frame predictions in time order)
    figure_name: ClassVar[str] = "predictions"  # plot files: <figure_name>_<partition>.png

    def __init__(self, data: DataConfig) -> None:
        super().__init__(data)
        self.targets = list(data.targets)
        self.n_out = len(self.targets)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "targets": self.targets}

    def restore(self, described: Mapping[str, Any]) -> None:
        if "targets" in described:
            self.targets = [str(t) for t in described["targets"]]
        super().restore(described)

    def spec(self, modalities: Sequence[str] = ()) -> TaskSpec:
        return TaskSpec(
            self.level, self.n_out, targets=tuple(self.targets), modalities=tuple(modalities)
        )

    def assemble(self, index: Any, seq: Tensor, out: Tensor) -> dict[str, Any]:
        res = super().assemble(index, seq, out)
        res["pred"] = res.pop("out")
        return res

    def score(self, res: Mapping[str, Any], ev: EvalConfig | None = None) -> dict[str, Any]:
        if not res:
            return {}
        pred = self.clipped(np.asarray(res["pred"]), ev)
        out = regression_metrics(pred, np.asarray(res["y"]), self.targets)
        smoothed = self.smoothed(pred, res["clip_pos"], ev)
        if smoothed is not None:
            sm = regression_metrics(smoothed[0], res["y"], self.targets)
            names = set(smoothed[1])
            out.update(
                {
                    f"{k}_smoothed": v
                    for k, v in sm.items()
                    if k == "ccc" or k.rsplit("_", 1)[-1] in names
                }
            )
        return out

    def smoothed(
        self, pred: np.ndarray, clip_pos: np.ndarray, ev: EvalConfig | None
    ) -> tuple[np.ndarray, list[str]] | None:
        """``eval.smooth`` (uniform filter per clip, in frames) applied to ``pred``: the smoothed
        array and the targets it smooths; None when the task or the config smooths nothing.
        ``score`` reports metrics of it, ``avemo predict`` writes it."""
        widths = {
            self.targets.index(k): int(v)
            for k, v in eval_section(ev).smooth.items()
            if k in self.targets
        }
        if not widths or not self.smooths:
            return None
        return smooth_per_clip(pred, clip_pos, widths), [self.targets[j] for j in widths]

    def prediction_table(self, res: Mapping[str, Any], partition: str) -> pd.DataFrame:
        if not res:
            return pd.DataFrame()
        df = pd.DataFrame({"clip_id": res["clip_ids"], "partition": partition})
        if "time" in res:
            df["time"] = res["time"]
        for j, t in enumerate(self.targets):
            df[f"{t}_true"] = np.asarray(res["y"])[:, j]
            df[f"{t}_pred"] = np.asarray(res["pred"])[:, j]
        return df

    def clipped(self, pred: np.ndarray, ev: EvalConfig | None) -> np.ndarray:
        """``pred`` in the range the run was scored in (``eval.clip_range``), if any."""
        rng = eval_section(ev).clip_range
        return np.clip(pred, float(rng[0]), float(rng[1])) if rng else pred

    def unlabelled_table(
        self, res: Mapping[str, Any], ev: EvalConfig | None, dm: Any
    ) -> pd.DataFrame:
        pred = self.clipped(np.asarray(res["pred"]), ev)
        body = pd.DataFrame({"clip_id": res["clip_ids"]})
        for j, t in enumerate(self.targets):
            body[t] = pred[:, j]
        return body

    def clip_summary(self, table: pd.DataFrame) -> pd.DataFrame:
        """Each target's (and its smoothed value's) mean over the clip's rows."""
        cols = [c for t in self.targets for c in (t, f"{t}_smoothed") if c in table]
        return table.groupby("clip_id", sort=False)[cols].mean().reset_index()

    def report_figures(self, run_dirs: Sequence[Path], title: str, stem: Path) -> list[Path]:
        """The test (else validation) predictions of all the runs, one figure
        (``figure``: a scatter per target, or traces over time)."""
        tables = [t for t in (self.read_predictions(d) for d in run_dirs) if t is not None]
        if not tables:
            return []
        table = pd.concat(tables, ignore_index=True)
        stem.parent.mkdir(parents=True, exist_ok=True)
        for part in ("test", "val"):
            rows = table[table["partition"] == part]
            if len(rows):
                return [self.figure(rows, stem.with_name(f"{stem.name}_{part}.png"))]
        return []

    def figure(self, table: pd.DataFrame, path: Path) -> Path:
        """One partition's predictions against the truth, drawn into ``path``."""
        raise NotImplementedError

    def plot(self, out: Path, table: pd.DataFrame, extra: Mapping[str, Any]) -> list[Path]:
        if not len(table):
            return []
        return [
            self.figure(table[table["partition"] == part], out / f"{self.figure_name}_{part}.png")
            for part in dict.fromkeys(table["partition"])
        ]

    def merge(
        self,
        tables: Sequence[pd.DataFrame],
        method: str = "ccc_centering",
        smooth: Mapping[str, int] | None = None,
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        return merge_frame_predictions(tables, self.targets, method, smooth, key=self.merge_key)


def build_task(cfg: RunConfig | Mapping[str, Any]) -> Task:
    """The task object of a run config (a dict is resolved first: ``run_config``)."""
    cfg = run_config(cfg)
    load_all()
    return TASKS.build(cfg.task.type, cfg.data)


def eval_section(ev: EvalConfig | Mapping[str, Any] | None) -> EvalConfig:
    """``ev`` as the ``eval`` section (None: the schema's defaults). A plain mapping is
    validated into one: callers outside the package may still hold a dict."""
    return section(EvalConfig, {} if ev is None else ev, "eval")
