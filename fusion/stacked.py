"""Cells that train together: several runs of one model shape as one stacked model.

Grid cells that differ only by seed, learning rate, weight decay, loss options or early
stopping have parameters of the same shapes. ``fit_stacked`` trains them in one loop: each
step gathers every cell's own batch (its seed's order, as a separate run sees it), stacks the
cells' parameters (``torch.stack`` of per-cell leaves, so each cell keeps its own optimiser
param group: lr, weight decay, Adam state), runs the model once under ``torch.func.vmap`` of
``functional_call``, sums the per-cell losses (each computed with the cell's own loss) and
takes ONE optimiser step for all. Validation is one vmapped pass over the shared validation
batches, scored per cell. A cell that stops early (its own patience) is frozen: its
parameters get no gradient from then on, so the optimiser leaves them (and their state) as
they are. Every cell then gets exactly the outputs of a separate run (``fit_and_evaluate``):
config, data side, ``metrics.csv``, ``checkpoints/{best,last}.pt``, predictions,
``final_metrics.json``, plots.

Limits (``why_not_stackable`` says which applies; the grid trains such cells separately):
BatchNorm (running statistics are updated in place), ``plateau`` / ``jca_reference``
schedules (per-cell monitor or per-cell base lr), ``fast_dev_run`` / ``limit_train_batches``,
different batch sizes or epochs. Modality dropout is drawn once per stacked batch (from the
first cell's seed), not per cell as a separate run draws it. Dropout draws differ from a separate run's
(``randomness="different"``: each cell its own masks, from one generator), so with dropout a
stacked cell is a valid run of its config but not bit-equal to the separate one; without
dropout it equals it within float tolerance (test).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from avemo.allocator import tune_allocator
from avemo.fusion.callbacks import improved, write_rows
from avemo.fusion.config import RunConfig, config_dict, dump_config, run_config
from avemo.fusion.evaluate import _is_input, score
from avemo.fusion.models.dropout import per_cell_masks
from avemo.fusion.module import build_loss
from avemo.fusion.registry import OPTIMIZERS, SCHEDULES
from avemo.fusion.train import _final_outputs, _write_data_side, build_model, determinism

#: Config keys that may differ between cells trained together (everything else must match).
STACKABLE_KEYS = (
    "seed",
    "optim.lr",
    "optim.weight_decay",
    "loss",
    "trainer.early_stopping",
    "name",
    "output",
)
SCHEDULES_OK = ("none", "cosine")


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def stack_key(cfg: RunConfig | Mapping[str, Any]) -> str:
    """Cells with equal keys can train together (the config without ``STACKABLE_KEYS``)."""
    import json

    flat = {
        k: v
        for k, v in _flat(config_dict(run_config(cfg))).items()
        if not any(k == s or k.startswith(s + ".") for s in STACKABLE_KEYS)
    }
    return json.dumps(flat, sort_keys=True, default=str)


def why_not_stackable(
    cfg: RunConfig | Mapping[str, Any], model: nn.Module | None = None
) -> str | None:
    """Why this config cannot train stacked (None: it can)."""
    cfg = run_config(cfg)
    tc = cfg.trainer
    if tc.fast_dev_run or tc.limit_train_batches:
        return "trainer.fast_dev_run / limit_train_batches"
    other = [lg for lg in tc.loggers if lg != "csv"]
    if other:
        return f"trainer.loggers {other} (stacked cells write the csv log only)"
    if cfg.optim.groups:
        return "optim.groups (stacked cells get one parameter group each)"
    if tc.swa is not None or tc.mixup is not None:
        return "trainer.swa / trainer.mixup (run by the single-run trainer)"
    sched = cfg.schedule.name
    if sched not in SCHEDULES_OK:
        return f"schedule {sched!r} (stacked cells support {', '.join(SCHEDULES_OK)})"
    if model is not None:
        if getattr(model, "has_members", False):
            return "independently trained members (model.late: one loss per member)"
        for mod in model.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                return f"{type(mod).__name__} (running statistics are updated in place)"
            if isinstance(mod, nn.RNNBase):
                return f"{type(mod).__name__} (no vmap rule for fused RNN kernels)"
    return None


@runtime_checkable
class _PacksRows(Protocol):
    """A layer that may compute on valid rows only (the transformer's Q/K/V): a shape that
    varies by batch, which vmap cannot stack, so the stacked model turns it off."""

    pack_rows: bool


class _Cell:
    """One run inside the stack: its config, folder, model, loss, seed and early stopping."""

    def __init__(self, cfg: RunConfig, run_dir: Path, model: nn.Module, dm: Any) -> None:
        self.cfg, self.run_dir, self.model = cfg, Path(run_dir), model
        self.loss_fn = build_loss(cfg, dm)
        self.monitor, self.mode = dm.task.monitor(cfg.trainer)
        es = cfg.trainer.early_stopping
        self.patience = es.patience if es is not None else None
        self.min_delta = es.min_delta if es is not None else 0.0
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.es_best: float | None = None
        self.wait = 0
        self.active = True
        self.rows: list[dict[str, Any]] = []
        self.logged_loss: list[
            float
        ] = []  # batch-size weighted epoch mean, as FusionModule logs it
        self.seed = cfg.seed
        self.t0 = time.perf_counter()
        self.fit_s = (0.0, 0.0)

    def improved(self, value: float) -> bool:  # BestCheckpoint's rule
        return improved(self.best, value, self.mode)

    def should_stop(self, value: float) -> bool:  # Lightning EarlyStopping's rule
        if self.patience is None:
            return False
        if math.isnan(value):
            self.wait += 1
        elif self.es_best is None or (
            value - self.es_best > self.min_delta
            if self.mode == "max"
            else self.es_best - value > self.min_delta
        ):
            self.es_best, self.wait = value, 0
            return False
        else:
            self.wait += 1
        return self.wait >= self.patience


def _order(seqs: Tensor, seed: int, epoch: int) -> Tensor:
    """A cell's training order in ``epoch``: ``DeviceBatches``' shuffle for that seed, so each
    cell sees the batches its separate run sees (the equality test holds both to it)."""
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    return seqs[torch.randperm(len(seqs), generator=g).to(seqs.device)]


def _write_history(cell: _Cell, steps: int) -> None:
    """``metrics.csv`` (MetricsHistory's rows) and, when the run logs csv, the CSVLogger's
    ``logs/csv/metrics.csv`` (a validation row and a train row per epoch, global step)."""
    write_rows(cell.run_dir / "metrics.csv", cell.rows)
    if "csv" in cell.cfg.trainer.loggers:
        log: list[dict[str, Any]] = []
        for r, w in zip(cell.rows, cell.logged_loss, strict=True):
            step = (r["epoch"] + 1) * steps - 1
            log.append(
                {
                    "epoch": r["epoch"],
                    "step": step,
                    **{k: v for k, v in r.items() if k.startswith("val/")},
                }
            )
            log.append({"epoch": r["epoch"], "step": step, "train/loss": w})
        write_rows(cell.run_dir / "logs" / "csv" / "metrics.csv", log)


def _save(cell: _Cell, params: Mapping[str, Tensor], name: str) -> None:
    d = cell.run_dir / "checkpoints"
    d.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu().clone() for k, v in params.items()}, d / name)


def fit_stacked(
    cfgs: Sequence[RunConfig | Mapping[str, Any]],
    dm: Any,
    run_dirs: Sequence[Path],
    verbose: bool = True,
) -> list[dict[str, Any]]:
    """Train ``cfgs`` (equal ``stack_key``, one shared datamodule) together; returns one
    result per cell, as ``fit_and_evaluate`` returns it, after writing the same run folders."""
    import lightning as L
    from torch.func import functional_call, vmap

    tune_allocator()  # [cells, batch, ...] activations: reuse them, no fresh kernel pages
    runs = [run_config(c) for c in cfgs]
    keys = {stack_key(c) for c in runs}
    if len(keys) != 1:
        raise ValueError("fit_stacked: the configs differ beyond " + ", ".join(STACKABLE_KEYS))
    cells: list[_Cell] = []
    for cfg, rd in zip(runs, run_dirs, strict=True):
        Path(rd).mkdir(parents=True, exist_ok=True)
        if not (Path(rd) / "config.yaml").exists():
            dump_config(cfg, Path(rd) / "config.yaml")
        _write_data_side(dm, Path(rd))
        L.seed_everything(cfg.seed, workers=False, verbose=False)
        cells.append(_Cell(cfg, rd, build_model(cfg, dm).to(dm.device), dm))
    why = why_not_stackable(runs[0], cells[0].model)
    if why:
        raise ValueError(f"fit_stacked: cannot stack: {why}")
    base = copy.deepcopy(cells[0].model)
    for mod in base.modules():  # vmap needs fixed shapes: no valid-rows-only projections
        if isinstance(mod, _PacksRows):
            mod.pack_rows = False
    names = [n for n, _ in base.named_parameters()]
    buffers = {
        n: torch.stack([dict(c.model.named_buffers())[n] for c in cells])
        for n, _ in base.named_buffers()
    }
    leaves = [{n: p for n, p in c.model.named_parameters()} for c in cells]
    c0 = runs[0]
    groups = [
        {
            "params": list(leaves[i].values()),
            "lr": c.cfg.optim.lr,
            "weight_decay": c.cfg.optim.weight_decay,
        }
        for i, c in enumerate(cells)
    ]
    # one group per cell: its lr, weight decay
    opt = OPTIMIZERS.build(c0.optim.name, groups, **c0.optim.options())
    max_epochs = c0.trainer.max_epochs
    sch = SCHEDULES.build(
        c0.schedule.name,
        opt,
        monitor=cells[0].monitor,
        mode=cells[0].mode,
        max_epochs=max_epochs,
        base_lr=c0.optim.lr,
        **c0.schedule.options(),
    )
    sch = sch["scheduler"] if isinstance(sch, dict) else sch
    clip = c0.trainer.gradient_clip_val
    mods = dm.modalities
    task = dm.task

    def forward(
        params: dict[str, Tensor], bufs: dict[str, Tensor], batch: dict[str, Tensor]
    ) -> Tensor:
        return functional_call(base, {**params, **bufs}, (batch,))

    train_fwd = vmap(forward, in_dims=(0, 0, 0), randomness="different")
    eval_fwd = vmap(forward, in_dims=(0, 0, None), randomness="different")
    train_seqs = dm.part_seqs["train"]
    bs = c0.data.batch_size
    steps = (len(train_seqs) + bs - 1) // bs
    mdrop = c0.data.modality_dropout
    val_batches = (
        [
            {k: v for k, v in b.items() if _is_input(k, mods) or k == "index"}
            for b in dm.batches("val")
        ]
        if len(dm.part_seqs["val"])
        else []
    )
    val_full = list(dm.batches("val")) if val_batches else []
    t0, cpu0 = time.perf_counter(), time.process_time()
    with determinism(c0.trainer.deterministic), per_cell_masks():
        for epoch in range(max_epochs):
            active = [i for i, c in enumerate(cells) if c.active]
            if not active:
                break
            base.train()
            losses: list[list[Tensor]] = [[] for _ in cells]
            weighted: list[list[Tensor]] = [[] for _ in cells]
            seen = 0
            orders = [_order(train_seqs, cells[i].seed, epoch) for i in active]
            g = torch.Generator().manual_seed(cells[active[0]].seed * 100003 + epoch)
            for step in range(steps):
                params = {n: torch.stack([leaves[i][n] for i in active]) for n in names}
                bufs = {n: b[active] for n, b in buffers.items()}
                # one gather for every cell's batch: [C*B] rows padded together, viewed [C, B, ...]
                seq = torch.cat([o[step * bs : (step + 1) * bs] for o in orders])
                flat = dm.gather(seq, mdrop, (), g)
                batch = {k: v.view(len(active), -1, *v.shape[1:]) for k, v in flat.items()}
                per_cell = [{k: v[j] for k, v in batch.items()} for j in range(len(active))]
                out = train_fwd(
                    params, bufs, {k: v for k, v in batch.items() if _is_input(k, mods)}
                )
                total = out.new_zeros(())
                for j, i in enumerate(active):
                    li = task.batch_loss(cells[i].loss_fn, out[j], per_cell[j])
                    losses[i].append(li.detach())
                    weighted[i].append(li.detach() * len(per_cell[j]["index"]))
                    total = total + li
                seen += len(per_cell[0]["index"])
                opt.zero_grad(set_to_none=True)
                total.backward()
                if clip:
                    for i in active:
                        torch.nn.utils.clip_grad_norm_(list(leaves[i].values()), float(clip))
                opt.step()  # frozen cells have no gradient: the optimiser skips them
            # validation: every active cell on the same batches, one vmapped pass
            base.eval()
            outs: list[Tensor] = []
            seqs: list[Tensor] = []
            vlosses: list[list[Tensor]] = [[] for _ in cells]
            with torch.no_grad():
                params = {n: torch.stack([leaves[i][n] for i in active]) for n in names}
                bufs = {n: b[active] for n, b in buffers.items()}
                for vb, full in zip(val_batches, val_full, strict=True):
                    o = eval_fwd(
                        params, bufs, {k: v for k, v in vb.items() if k != "index"}
                    ).float()
                    outs.append(o)
                    seqs.append(vb["index"])
                    for j, i in enumerate(active):
                        vlosses[i].append(task.batch_loss(cells[i].loss_fn, o[j], full))
            for j, i in enumerate(active):
                c = cells[i]
                row: dict[str, Any] = {"epoch": epoch, "lr": opt.param_groups[i]["lr"]}
                if losses[i]:
                    row["train/loss"] = float(torch.stack(losses[i]).mean())
                    c.logged_loss.append(float(torch.stack(weighted[i]).sum() / seen))
                if outs:
                    res = dm.assemble(torch.cat(seqs), torch.cat([o[j] for o in outs]))
                    val = {
                        f"val/{k}": v
                        for k, v in score(res, dm, c.cfg.eval).items()
                        if isinstance(v, float)
                    }
                    val["val/loss"] = float(torch.stack(vlosses[i]).mean())
                    row.update(val)
                    value = val.get(c.monitor)
                    if value is not None and c.improved(value):
                        c.best, c.best_epoch = value, epoch
                        _save(c, c.model.state_dict(), "best.pt")
                    if value is not None and c.should_stop(value):
                        c.active = False
                c.rows.append(row)
                _write_history(c, steps)
                if verbose:
                    shown = {
                        k: v for k, v in row.items() if k in ("train/loss", "val/loss", c.monitor)
                    }
                    print(
                        f"[{c.cfg.name}] epoch {epoch + 1}/{max_epochs}  "
                        + "  ".join(f"{k} {v:.4f}" for k, v in shown.items())
                        + ("  (stopped early)" if not c.active else ""),
                        flush=True,
                    )
                if not c.active or epoch == max_epochs - 1:
                    c.fit_s = (time.perf_counter() - t0, time.process_time() - cpu0)
                    for p in leaves[i].values():
                        p.requires_grad_(False)  # frozen: no gradient, no optimiser update
            if sch is not None:
                sch.step()
    results = []
    for c in cells:
        if c.fit_s == (0.0, 0.0):
            c.fit_s = (time.perf_counter() - t0, time.process_time() - cpu0)
        model = c.model
        _save(c, model.state_dict(), "last.pt")
        best_pt = c.run_dir / "checkpoints" / "best.pt"
        if best_pt.exists():
            model.load_state_dict(torch.load(best_pt, map_location=dm.device, weights_only=True))
        for p in model.parameters():
            p.requires_grad_(True)
        model.to(dm.device)
        dm.seed = c.seed
        results.append(
            _final_outputs(c.cfg, dm, model, c.monitor, c.run_dir, c.fit_s, c.rows, c.best_epoch)
        )
    return results


__all__ = ["STACKABLE_KEYS", "fit_stacked", "stack_key", "why_not_stackable"]
