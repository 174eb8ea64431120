"""Figures of the docs site, made from a real run of the demo pipeline (nothing committed).

``python docs/figures.py [OUT_DIR]`` (default ``docs/figures/``; ``make docs`` calls it) writes:

* ``report.png``    -- the demo run's own plots (learning curves, validation confusion matrix);
* ``montage.png``   -- ``avemo inspect face_crops.h5 --montage CLIP``: the face crops stage one
  saw in one demo clip, with its mask and track;
* ``attention.png`` -- ``fusion.plots.plot_attention``: the demo model's temporal attention over
  that clip, per modality at its own rate, in seconds.

The pipeline runs through the public CLI (``avemo demo -o .cache/docs-demo``, about 1.5 CPU
minutes) unless a complete earlier run is there whose feature files this avemo would make the
same way (feature-set config and weight checksums). Any figure that cannot be made stops the
script with exit status 1 and says which one and why.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / ".cache" / "docs-demo"
#: a validation clip (the run never trained on it): the man smiles, then at 1.5 s the face is
#: gone (black, then a cartoon title), so the face rows after it are masked and the audio goes on
CLIP = "facenoface_0090"
FIGURES = ("report.png", "montage.png", "attention.png")


class FigureError(RuntimeError):
    """A figure cannot be made: the message says which and why."""


def _avemo(*args: str) -> None:
    """One avemo command in a child process (the CLI as a user runs it); fails loudly."""
    cmd = [sys.executable, "-m", "avemo", *args]
    print("$ avemo " + " ".join(args), flush=True)
    rc = subprocess.run(cmd, cwd=REPO, check=False).returncode
    if rc:
        raise FigureError(f"`avemo {' '.join(args)}` exited with status {rc}")


def _run_dir(demo: Path) -> Path | None:
    """The newest finished demo run folder (config, best checkpoint, metrics, its plots)."""
    need = (
        "config.yaml",
        "checkpoints/best.pt",
        "final_metrics.json",
        "features.json",
        "plots/learning_curves.png",
        "plots/confusion_val.png",
    )
    done = [
        d
        for d in sorted((demo / "runs" / "demo_fbp").glob("*/"))
        if all((d / n).is_file() for n in need)
    ]
    return done[-1] if done else None


def _stale(run_dir: Path) -> str | None:
    """Why the cached demo cannot be reused (its feature files would be made differently by
    this avemo, or are gone), or None."""
    from avemo.data.store import FeatureFile, diff_provenance
    from avemo.fusion.run import Run
    from avemo.workflows.predict import FeatureMismatchError, check_feature_sets

    run = Run.from_dir(run_dir, "best")
    requests = run.feature_requests()
    try:
        check_feature_sets(requests, "cpu")
    except FeatureMismatchError as e:
        return str(e)
    for m, path in _feature_files(run_dir).items():
        if not path.is_file():
            return f"{path} is gone"
        with FeatureFile(path) as ff:
            if diff_provenance(ff.provenance, requests[m]):
                return f"{path} was made with another config than the run records"
    return None


def _feature_files(run_dir: Path) -> dict[str, Path]:
    import json

    return {
        m: Path(v["path"]) for m, v in json.loads((run_dir / "features.json").read_text()).items()
    }


def demo_run(demo: Path = DEMO) -> Path:
    """A finished demo run folder under ``demo``: reused when complete and current, else made."""
    run_dir = _run_dir(demo)
    why = "no finished demo run" if run_dir is None else _stale(run_dir)
    if why is None:
        print(f"reusing the demo run {run_dir}", flush=True)
        return run_dir  # type: ignore[return-value]
    print(f"running the demo pipeline into {demo} ({why})", flush=True)
    if demo.exists():
        shutil.rmtree(demo)  # a stale or partial run: start clean, so the figures match one run
    _avemo("demo", "-o", str(demo), "--device", "cpu")
    run_dir = _run_dir(demo)
    if run_dir is None:
        raise FigureError(
            f"`avemo demo` finished but left no complete run folder under {demo / 'runs'}"
        )
    return run_dir


def report_figure(run_dir: Path, out: Path) -> Path:
    """The run's learning curves and validation confusion matrix, side by side."""
    import matplotlib.image as mpimg

    from avemo.fusion.plots import pyplot

    plt = pyplot()
    imgs = [
        mpimg.imread(run_dir / "plots" / n) for n in ("learning_curves.png", "confusion_val.png")
    ]
    h = max(i.shape[0] for i in imgs)
    w = sum(i.shape[1] for i in imgs)
    fig, axes = plt.subplots(
        1, 2, figsize=(w / 100, h / 100), gridspec_kw={"width_ratios": [i.shape[1] for i in imgs]}
    )
    for ax, img in zip(axes, imgs, strict=True):
        ax.imshow(img)
        ax.axis("off")
    fig.subplots_adjust(0, 0, 1, 1, 0.02, 0)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def montage_figure(demo: Path, out: Path, clip: str = CLIP) -> Path:
    """``avemo features -s face_crops`` on the one clip, then ``avemo inspect --montage``."""
    import pandas as pd

    man = pd.read_csv(demo / "manifest.csv", dtype=str)
    row = man[man["clip_id"] == clip]
    if row.empty:
        raise FigureError(f"the demo manifest has no clip {clip}")
    one = demo / "figures" / "manifest.csv"
    shutil.rmtree(one.parent, ignore_errors=True)  # one clip (seconds): never a stale config's file
    one.parent.mkdir(parents=True)
    row.assign(
        video=str(demo / row["video"].iloc[0]), audio=str(demo / row["audio"].iloc[0])
    ).to_csv(one, index=False)
    _avemo(
        "features",
        "-q",
        "-m",
        str(one),
        "-s",
        "face_crops",
        "-o",
        str(demo / "figures"),
        "--device",
        "cpu",
    )
    _avemo(
        "inspect", "-q", str(demo / "figures" / "face_crops.h5"), "--montage", clip, "-o", str(out)
    )
    return out


def attention_figure(run_dir: Path, out: Path, clip: str = CLIP) -> Path:
    """The run applied to its own feature files of ``clip``; its attention drawn in seconds."""
    from avemo.fusion.plots import plot_attention
    from avemo.fusion.predict import predict_files
    from avemo.fusion.run import Run

    run = Run.from_dir(run_dir, "best")
    table, extra = predict_files(
        run, _feature_files(run_dir), [clip], progress=False, attention=True
    )
    got = (extra.get("attention") or {}).get(clip)
    if not got:
        raise FigureError(f"the demo model kept no temporal attention for {clip}")
    pred = table.iloc[0]
    title = f"{clip} (validation clip): predicted {pred['pred']} ({pred['top_p']:.2f})"
    return plot_attention(got["attention"], got["timing"], out, got["strides"], title)


def make_figures(out: Path, demo: Path = DEMO) -> dict[str, float]:
    """Every figure into ``out``; returns seconds per step."""
    out.mkdir(parents=True, exist_ok=True)
    took: dict[str, float] = {}
    t = time.perf_counter()
    run_dir = demo_run(demo)
    took["demo"] = time.perf_counter() - t
    for name, make in (
        ("report.png", lambda p: report_figure(run_dir, p)),
        ("montage.png", lambda p: montage_figure(demo, p)),
        ("attention.png", lambda p: attention_figure(run_dir, p)),
    ):
        t = time.perf_counter()
        path = out / name
        path.unlink(missing_ok=True)  # an old picture must not pass for a new one
        try:
            make(path)
        except FigureError:
            raise
        except Exception as e:  # noqa: BLE001 - whatever broke, say which figure
            raise FigureError(f"{name}: {type(e).__name__}: {e}") from e
        if not path.is_file() or path.stat().st_size == 0:
            raise FigureError(f"{name} was not written")
        took[name] = time.perf_counter() - t
        print(f"wrote {path} ({took[name]:.1f} s)", flush=True)
    return took


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "out",
        nargs="?",
        type=Path,
        default=REPO / "docs" / "figures",
        help="where the PNGs go (default docs/figures)",
    )
    a = p.parse_args(argv)
    t = time.perf_counter()
    try:
        took = make_figures(a.out.resolve())
    except FigureError as e:
        print(f"docs/figures.py: {e}", file=sys.stderr)
        return 1
    print(
        f"figures: {', '.join(FIGURES)} in {a.out} ({time.perf_counter() - t:.0f} s; demo step "
        f"{took['demo']:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
