"""Training entry: config -> datamodule -> model -> Lightning fit -> final evaluation -> run folder.

Two levels, for the CLI and for ablation grids:

* ``train_from_config(config, overrides, feature_cache=..., run_dir=...)`` does everything.
  Pass the same ``feature_cache`` dict to many calls in one process: feature files are read
  once per (path, device) and the device tensors are shared by all runs.
* ``build_datamodule(cfg, device, feature_cache)`` + ``fit_and_evaluate(cfg, dm, run_dir)``
  let grid code reuse one prepared datamodule (same data, split and normalisation) for
  several models: build it once, then call ``fit_and_evaluate`` with different
  ``cfg.model`` / optimiser settings.

Every function here takes a ``RunConfig`` (``fusion.config``; a dict is resolved into one) and
reads its attributes: the defaults are the schema's.

Run folder contents: ``config.yaml`` (resolved), ``features.json`` (path + provenance of each
feature file), ``data_report.json``, ``splits.json`` + ``folds.csv``, ``metrics.csv`` (per
epoch), ``normalisation.npz`` (training statistics, for ``avemo predict``),
``checkpoints/{best,last}.pt`` (state dicts), ``predictions.csv`` (clip tasks) or
``predictions.parquet`` (frame tasks), ``final_metrics.json``, ``plots/*.png``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch

from avemo import settings
from avemo.allocator import tune_allocator
from avemo.fusion import registry
from avemo.fusion.callbacks import BestCheckpoint, EpochLines, EpochProgressBar, MetricsHistory
from avemo.fusion.config import ConfigError, RunConfig, dump_config, load_config, run_config
from avemo.fusion.datamodule import CachedFeatureDataModule
from avemo.fusion.evaluate import predict_partition, score
from avemo.fusion.features import STATS_FILE, save_stats
from avemo.fusion.module import FusionModule
from avemo.fusion.optim import param_groups
from avemo.fusion.plots import plot_run
from avemo.fusion.run import resolve_device as device_of
from avemo.fusion.speaker_norm import save as save_speaker_norm
from avemo.fusion.splits import write_splits
from avemo.fusion.weight_averaging import WeightAveraging, first_epoch

log = logging.getLogger(__name__)


def trainer_device(accelerator: str | None) -> tuple[str, str]:
    """(torch device, Lightning accelerator) for ``trainer.accelerator`` (auto|cpu|gpu|cuda):
    the device is ``fusion.run.resolve_device``'s (a GPU asked for where none is: the CPU, with
    a ``DeviceFallbackWarning``)."""
    dev = device_of(accelerator)
    return str(dev), "gpu" if dev.type == "cuda" else "cpu"


@contextmanager
def determinism(on: bool) -> Iterator[None]:
    """``trainer.deterministic``: deterministic kernels (warn where an op has none) for the fit,
    the previous global settings restored afterwards (Lightning's own flag leaks them into the
    rest of the process). Without ``fill_uninitialized_memory``: that debugging aid NaN-fills
    every ``torch.empty``, measured 4x slower on the masked ``where``/``index_select`` every
    batch does (fusion bench, fit overhead rows); no kernel here reads uninitialised memory."""
    import torch.utils.deterministic as D

    prev = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        D.fill_uninitialized_memory,  # type: ignore[attr-defined]  # module property: torch swaps in its class
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    if on:
        torch.use_deterministic_algorithms(True, warn_only=True)
        D.fill_uninitialized_memory = False  # type: ignore[attr-defined]  # module property: torch swaps in its class
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])
        D.fill_uninitialized_memory = prev[2]  # type: ignore[attr-defined]  # module property: torch swaps in its class
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev[3], prev[4]


def make_run_dir(
    cfg: RunConfig | Mapping[str, Any], run_dir: str | os.PathLike[str] | None = None
) -> Path:
    """``run_dir`` as given, else ``<output.dir>/<name>/<timestamp>`` (never reused)."""
    if run_dir is not None:
        p = Path(run_dir)
    else:
        cfg = run_config(cfg)
        base = Path(cfg.output.dir) / str(cfg.name) / time.strftime("%Y%m%d-%H%M%S")
        p, n = base, 1
        while p.exists():
            p, n = base.with_name(f"{base.name}-{n}"), n + 1
    p.mkdir(parents=True, exist_ok=True)
    return p


def build_datamodule(
    cfg: RunConfig | Mapping[str, Any],
    device: str = "cpu",
    feature_cache: dict | None = None,
    manifest: pd.DataFrame | None = None,
) -> CachedFeatureDataModule:
    """A ready (``setup`` done) datamodule: files loaded/shared, split made, statistics computed."""
    dm = CachedFeatureDataModule(
        run_config(cfg), device, feature_cache=feature_cache, manifest=manifest
    )
    dm.setup("fit")
    return dm


def build_model(cfg: RunConfig | Mapping[str, Any], dm: CachedFeatureDataModule) -> torch.nn.Module:
    """``model.name`` built with the model section's options, for ``dm``'s inputs and task; a
    model's own option check (a stream the run lacks, a bad name) is a ``ConfigError``."""
    model = run_config(cfg).model
    try:
        return registry.build_model(model, dm.inputs, dm.spec)
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(f"model ({model.name}): {e}") from e


def build_loggers(cfg: RunConfig, run_dir: Path) -> list[Any]:
    """Lightning loggers named by ``trainer.loggers`` (csv | tensorboard | mlflow), all under
    ``<run>/logs/``: ``tensorboard --logdir <run>/logs/tensorboard`` opens a run."""
    from lightning.pytorch import loggers as LL

    out: list[Any] = []
    for name in cfg.trainer.loggers:
        if name == "csv":
            out.append(LL.CSVLogger(str(run_dir), name="logs", version="csv"))
        elif name == "tensorboard":
            out.append(
                LL.TensorBoardLogger(
                    str(run_dir), name="logs", version="tensorboard", default_hp_metric=False
                )
            )
        elif name == "mlflow":
            out.append(
                LL.MLFlowLogger(
                    experiment_name=str(cfg.name),
                    run_name=run_dir.name,
                    tracking_uri=(run_dir / "logs" / "mlflow").resolve().as_uri(),
                )
            )
    return out


def progress_mode(cfg: RunConfig, progress: bool | None = None) -> str:
    """bar | lines | none: ``trainer.progress`` (auto: a bar on a terminal, else one line per
    epoch); ``output.verbose: false`` silences lines; ``progress`` (True/False) overrides."""
    if progress is not None:
        mode = "bar" if progress else "lines"
    else:
        mode = cfg.trainer.progress
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
    if mode == "lines" and not cfg.output.verbose:
        return "none"
    return mode


def fit_and_evaluate(
    cfg: RunConfig | Mapping[str, Any],
    dm: CachedFeatureDataModule,
    run_dir: Path,
    model: torch.nn.Module | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Seed, build the model (unless given), fit with Lightning, evaluate, write outputs.

    ``dm`` may be shared by several calls (same data, split and normalisation); only the
    model / loss / optimiser / trainer sections of ``cfg`` should differ between them.
    ``run_dir`` gets the full set of outputs (config, data report, splits included).
    """
    tune_allocator()  # reuse freed activations instead of fresh kernel pages (avemo/allocator.py)
    cfg = run_config(cfg)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "config.yaml").exists():
        dump_config(cfg, run_dir / "config.yaml")
    if not (run_dir / "data_report.json").exists():
        _write_data_side(dm, run_dir)
    L.seed_everything(cfg.seed, workers=False, verbose=False)
    if model is None:
        model = build_model(cfg, dm)
    if cfg.optim.groups:
        param_groups(model, cfg.optim.groups)  # a prefix naming no module: before any epoch
    tc = cfg.trainer
    _, accelerator = trainer_device(tc.accelerator)
    if accelerator == "gpu":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    module = FusionModule(model, cfg, dm, run_dir)
    best = BestCheckpoint(run_dir, module.monitor, module.mode)
    history = MetricsHistory(run_dir)
    callbacks: list[Any] = [best, history]
    swa = WeightAveraging(first_epoch(tc.swa, tc.max_epochs)) if tc.swa is not None else None
    if swa is not None:
        callbacks.append(swa)
    mode = progress_mode(cfg, progress)
    if mode == "bar":
        callbacks.append(EpochProgressBar())
    elif mode == "lines":
        callbacks.append(EpochLines(str(cfg.name), module.monitor, history))
    es = tc.early_stopping
    if es is not None:
        callbacks.append(
            L.pytorch.callbacks.EarlyStopping(
                monitor=module.monitor,
                mode=module.mode,
                patience=es.patience,
                min_delta=es.min_delta,
                check_finite=False,
            )
        )
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)  # no "GPU available"/tips banners
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        max_epochs=tc.max_epochs,
        deterministic=False,  # set by `determinism` below, without the NaN fill, and undone after
        fast_dev_run=tc.fast_dev_run,
        logger=build_loggers(cfg, run_dir) or False,
        enable_checkpointing=False,  # BestCheckpoint writes plain state dicts instead
        enable_progress_bar=mode == "bar",
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        default_root_dir=str(run_dir),
        gradient_clip_val=tc.gradient_clip_val,
        limit_train_batches=tc.limit_train_batches,
        log_every_n_steps=1 << 30,  # epoch metrics only: no per-step logger bookkeeping
    )
    t0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*is an invalid value for.*")
        warnings.filterwarnings("ignore", ".*LeafSpec.*")
        warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
        warnings.filterwarnings("ignore", ".*Starting from v1.9.0, `tensorboardX`.*")
        with determinism(tc.deterministic):
            trainer.fit(
                module, train_dataloaders=dm.train_dataloader(), val_dataloaders=dm.val_dataloader()
            )
    fit_s, fit_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    best_pt = run_dir / "checkpoints" / "best.pt"
    model.to(dm.device)
    averaged = swa is not None and swa.apply(model, dm.train_dataloader(), module)
    if averaged:  # the average of the last epochs, not a selected epoch, is the final model
        assert swa is not None
        best.save_model(model, "swa.pt")
        _write_swa_note(run_dir, swa.record())
    elif best_pt.exists():
        model.load_state_dict(torch.load(best_pt, map_location=dm.device, weights_only=True))
    # The validation pass of the epoch whose weights are now loaded is the final val prediction
    # (same batches, eval mode, same weights): reuse it instead of a second pass, unless the fit
    # saw only part of the partition (fast_dev_run).
    known = (
        None
        if tc.fast_dev_run or averaged
        else (best.best_val_res if best_pt.exists() else module.last_val_res)
    )
    return _final_outputs(
        cfg,
        dm,
        model,
        module.monitor,
        run_dir,
        (fit_s, fit_cpu_s),
        history.rows,
        None if averaged else best.best_epoch,
        known={"val": known} if known else None,
    )


def _write_swa_note(run_dir: Path, record: Mapping[str, Any]) -> None:
    """``swa.json``: which epochs the final (averaged) weights are the mean of."""
    (run_dir / "swa.json").write_text(json.dumps(dict(record), indent=1))


def train_from_config(
    config: str | os.PathLike[str] | Mapping[str, Any] | RunConfig,
    overrides: list[str] | None = None,
    *,
    feature_cache: dict | None = None,
    run_dir: Path | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train one run. Returns ``{"run_dir", "metrics", "predictions", "history", ...}``.

    ``metrics`` holds the final ``val/...`` and ``test/...`` scores of the best checkpoint
    (plus ``...@missing-<modality>`` when ``data.eval_missing`` is set).
    """
    cfg = load_config(config, overrides)
    device, _ = trainer_device(cfg.trainer.accelerator)
    dm = build_datamodule(cfg, device, feature_cache)  # data mistakes fail before any folder exists
    fresh = run_dir is None or not Path(run_dir).exists()
    target = Path(run_dir) if run_dir is not None else Path(cfg.output.dir) / str(cfg.name)
    kept = next((p for p in (target, *target.parents) if p.exists()), Path("/"))  # existed before
    run_dir = make_run_dir(cfg, run_dir)
    try:
        dump_config(cfg, run_dir / "config.yaml")
        if cfg.output.verbose:
            parts = ", ".join(f"{p} {len(v)}" for p, v in dm.splits["partitions"].items())
            print(
                f"[{cfg.name}] {len(dm.manifest)} clips ({parts}) on {device}; run folder {run_dir}"
            )
            for note in dm.notes:
                print(f"[{cfg.name}] note: {note}")
        if progress is None and settings.current().progress:
            progress = True
        return fit_and_evaluate(cfg, dm, run_dir, progress=progress)
    except BaseException:
        if fresh and not any((run_dir / "checkpoints").glob("*.pt")):
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing trained: leave no husk behind
            for parent in run_dir.parents:  # nor the empty <output.dir>/<name> made for it
                if parent == kept or not parent.exists() or any(parent.iterdir()):
                    break
                parent.rmdir()
        raise


# ----------------------------------------------------------------------------- outputs


def _write_data_side(dm: CachedFeatureDataModule, run_dir: Path) -> None:
    feats = {m: {"path": str(a.path), "provenance": a.provenance} for m, a in dm.arrays.items()}
    (run_dir / "features.json").write_text(json.dumps(feats, indent=1, default=str))
    report = {
        "notes": dm.notes,
        "clips": len(dm.manifest),
        "status_counts": dm.status_counts,
        "partitions": {p: len(v) for p, v in dm.splits["partitions"].items()},
        "sequences": {p: len(v) for p, v in dm.part_seqs.items()},
        "inputs": {m: list(s) for m, s in dm.inputs.items()},
        "task": dm.task.describe(),
        "normalised": sorted(dm.stats),
    }
    (run_dir / "data_report.json").write_text(json.dumps(report, indent=1))
    save_stats(dm.stats, run_dir / STATS_FILE)  # `avemo predict` normalises new clips with these

    save_speaker_norm(getattr(dm, "speaker_norm", None), run_dir)  # the mode chosen, for predict
    write_splits(dm.splits, dm.manifest, run_dir)


def _final_outputs(
    cfg: RunConfig,
    dm: CachedFeatureDataModule,
    model: torch.nn.Module,
    monitor: str,
    run_dir: Path,
    fit_s: tuple[float, float],
    history: list[dict[str, Any]],
    best_epoch: int | None,
    known: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Score the loaded model on val and test, write predictions and final metrics; ``known``:
    partitions whose predictions by these weights are already assembled (the fit's own pass)."""
    parts = [p for p in ("val", "test") if len(dm.part_seqs[p])]
    missing = list(cfg.data.eval_missing)
    metrics: dict[str, float] = {}
    extra: dict[str, Any] = {}
    pred_frames = []
    for p in parts:
        res = (known or {}).get(p) or predict_partition(model, dm, p)
        sc = score(res, dm, cfg.eval)
        for k, v in sc.items():
            if isinstance(v, float):
                metrics[f"{p}/{k}"] = v
            else:
                extra[f"{p}/{k}"] = np.asarray(v).tolist()
        pred_frames.append(dm.task.prediction_table(res, p))
        if missing:
            sc = score(predict_partition(model, dm, p, missing=missing), dm, cfg.eval)
            tag = "@missing-" + "+".join(missing)
            metrics.update({f"{p}/{k}{tag}": v for k, v in sc.items() if isinstance(v, float)})
    table = pd.concat(pred_frames, ignore_index=True) if pred_frames else pd.DataFrame()
    pred_path = dm.task.write_predictions(table, run_dir)
    final = {
        "metrics": metrics,
        **extra,
        "best_epoch": best_epoch,
        "monitor": monitor,
        "epochs": len(history),
        "fit_seconds": fit_s[0],
        "fit_cpu_seconds": fit_s[1],
    }
    (run_dir / "final_metrics.json").write_text(json.dumps(final, indent=1))
    if cfg.output.plots:
        try:
            plot_run(run_dir, history, dm.task, table, extra, monitor)
        except Exception as e:  # noqa: BLE001 - a plot must never lose a finished run
            log.warning("plots failed: %s", e)
    return {
        "run_dir": run_dir,
        "metrics": metrics,
        "predictions": pred_path,
        "history": history,
        "best_epoch": best_epoch,
        **extra,
        "checkpoint": run_dir / "checkpoints" / "best.pt",
        "notes": list(dm.notes),
    }


__all__ = [
    "build_datamodule",
    "build_model",
    "fit_and_evaluate",
    "train_from_config",
    "make_run_dir",
    "trainer_device",
]
