"""``make demo``: the whole pipeline on the built-in demo corpus, then a short report.

corpus + manifest (``avemo.data.demo``) -> stage one features (``face_faceapi``, ``logmel``) ->
stage two training (``workflows/configs/demo_fbp.yaml``) -> prediction on the real CREMA-D
actor-1001 takes (footage the model never saw, ``avemo predict``), each beside what the default
face set's own network reads in it zero-shot (its class logits, no training) -> report.
Everything goes under ``demo/`` in the current folder (the repo root under ``make``) or
``$AVEMO_DEMO_DIR``.

This orchestrator is the one workflow allowed to call stage one (it is the user's single
command); it imports the extraction runner inside the function. A step whose code is not
there yet is reported as not available and skipped; steps that exist run for real, and
their errors are shown as one message.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from avemo import settings
from avemo.data.assets import cremad_1001
from avemo.data.demo import build_demo_corpus
from avemo.data.manifest import load_manifest
from avemo.extract.registry import FEATURE_SETS as REG
from avemo.extract.registry import load_for
from avemo.fusion.config import load_config
from avemo.workflows.entry import module_main
from avemo.workflows.predict import predict_inputs

FEATURE_SETS = ("face_faceapi", "logmel")
DEFAULT_MODALITIES = {"face": "face_faceapi", "audio": "logmel"}
CONFIG = Path(__file__).resolve().parent / "configs" / "demo_fbp.yaml"


def demo_dir() -> Path:
    return (settings.current().demo_dir or Path.cwd() / "demo").expanduser().resolve()


def available_feature_sets(names: Sequence[str]) -> list[str]:
    """The registered names among ``names`` (plugins loaded for them)."""
    load_for(list(names))
    return [n for n in names if n in REG]


def training_overrides(
    config: Path, manifest: Path, features: dict[str, Path], out: Path
) -> list[str]:
    """Point the demo config at this corpus, its feature files and ``out/runs``.

    The config (a run config, read as ``fuse-train`` reads it: its ``base:`` chain and
    feature-set names resolved) names its feature files; only their folder is replaced, so the
    modality keys (and which set feeds which) stay the config's own decision.
    """
    over = [f"data.manifest={manifest}", f"output.dir={out / 'runs'}"]
    configured = load_config(config, over, check_args=False).data.features
    by_name = {p.name: p for p in features.values()}
    for modality, path in configured.items():
        name = Path(str(path)).name
        over.append(f"data.features.{modality}={by_name.get(name, out / 'features' / name)}")
    return over


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def run_demo(
    out: Path | None = None, device: str = "cpu", train_overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """Run every available step; returns what was produced and what was skipped."""
    out = out or demo_dir()
    result: dict[str, Any] = {"dir": out, "skipped": [], "features": {}, "metrics": {}}
    print(f"[1/4] demo corpus -> {out}", flush=True)
    manifest = build_demo_corpus(out, progress=True)
    df = load_manifest(manifest)
    result["manifest"] = manifest
    counts = df.groupby(["split", "label"]).size().to_dict()
    print(
        f"      manifest {manifest}: {len(df)} clips; "
        + ", ".join(f"{s}/{lab} {n}" for (s, lab), n in sorted(counts.items())),
        flush=True,
    )

    print(f"[2/4] features {', '.join(FEATURE_SETS)} -> {out / 'features'}", flush=True)
    have = available_feature_sets(FEATURE_SETS)
    missing = [n for n in FEATURE_SETS if n not in have]
    if missing:
        result["skipped"].append(f"features {', '.join(missing)}: feature set not registered")
        print(f"      not available yet: {result['skipped'][-1]}", flush=True)
    if have:
        from avemo.extract.runner import run_features  # the one sanctioned stage-one call

        files = run_features(manifest, list(have), out / "features", device=device)
        result["features"] = {k: Path(v) for k, v in files.items()}

    print(f"[3/4] fusion training ({CONFIG.relative_to(CONFIG.parents[2])})", flush=True)
    why = (
        f"the demo config {CONFIG} does not exist yet"
        if not CONFIG.exists()
        else f"needs the feature sets {', '.join(missing)}"
        if missing
        else None
    )
    if why:
        result["skipped"].append(f"training: {why}")
        print(f"      not available yet: {why}", flush=True)
    else:
        from avemo.fusion.train import train_from_config

        over = [*training_overrides(CONFIG, manifest, result["features"], out), *train_overrides]
        run = train_from_config(str(CONFIG), over)
        result["run_dir"] = Path(run["run_dir"])
        result["metrics"] = run.get("metrics", {})
    if "run_dir" in result:
        print("[4/4] predict the real CREMA-D actor-1001 takes with the trained run", flush=True)
        result["real"] = predict_real_clips(result["run_dir"], out, device, result["skipped"])
    _report(result)
    return result


CREMAD_WORDS = {
    "ANG": "angry",
    "DIS": "disgust",
    "FEA": "fear",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}


def predict_real_clips(run_dir: Path, out: Path, device: str, skipped: list[str]) -> Any:
    """``avemo predict`` on the 6 CREMA-D 1001 takes (a manifest with their true labels);
    returns the prediction table, or None (reason appended to ``skipped``)."""
    import pandas as pd

    try:
        clips = cremad_1001()
    except Exception as e:  # noqa: BLE001 - offline without the cache: the demo still reports
        skipped.append(f"prediction on CREMA-D: clips not available ({e}); run `make setup`")
        print(f"      not available: {skipped[-1]}", flush=True)
        return None
    folder = out / "predict_cremad"
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "cremad_1001.csv"
    pd.DataFrame(
        [
            {
                "clip_id": p.stem,
                "video": str(p),
                "audio": str(p),
                "label": f"{CREMAD_WORDS.get(e, e)} ({e})",
            }
            for p, e in clips
        ]
    ).to_csv(manifest, index=False)
    res = predict_inputs(run_dir, [manifest], folder, device=device)
    print(f"      predictions: {res['path']}", flush=True)
    table = res["table"]
    face_set = DEFAULT_MODALITIES["face"]
    print(
        f"      zero-shot: what {face_set}'s own network reads in each take (its logits, no training)",
        flush=True,
    )
    try:
        reads = zero_shot_readings(clips, face_set, device)
    except Exception as e:  # noqa: BLE001 - the trained run's table is still worth showing
        skipped.append(f"zero-shot reading of {face_set}: {type(e).__name__}: {e}")
        print(f"      not available: {skipped[-1]}", flush=True)
        return table
    return table.merge(reads, on="clip_id", how="left")


def zero_shot_readings(clips: Sequence[tuple[Path, str]], face_set: str, device: str) -> Any:
    """Per take, the face set's network read zero-shot: the mean over the take's frames of the
    softmax of the class logits the set appends with ``logits: true``; the top class (named by
    the set's ``logit_classes``) and its probability. Columns clip_id, zero_shot, zero_shot_p."""
    import numpy as np
    import pandas as pd

    from avemo.extract.base import ClipInput

    load_for([face_set])
    fs = REG.build(face_set, {"logits": True}, device)
    classes = fs.logit_classes()
    if not classes:
        raise ValueError(f"{face_set} names no logit classes")
    rows = []
    try:
        for r in fs.extract([ClipInput(p.stem, str(p)) for p, _ in clips]):
            valid = (
                r.values[r.mask][:, -len(classes) :].astype(np.float64)
                if r.status == "ok"
                else None
            )
            if valid is None or not len(valid):
                rows.append(
                    {
                        "clip_id": r.clip_id,
                        "zero_shot": f"({r.status})",
                        "zero_shot_p": float("nan"),
                    }
                )
                continue
            e = np.exp(valid - valid.max(1, keepdims=True))
            probs = (e / e.sum(1, keepdims=True)).mean(0)
            top = int(probs.argmax())
            rows.append(
                {"clip_id": r.clip_id, "zero_shot": classes[top], "zero_shot_p": float(probs[top])}
            )
    finally:
        fs.close()
    return pd.DataFrame(rows, columns=["clip_id", "zero_shot", "zero_shot_p"])


def _report(result: dict[str, Any]) -> None:
    from avemo.data.store import describe

    print("\n== avemo demo report ==")
    print(f"corpus:   {result['dir']}  (labels are illustrative, see avemo.data.demo)")
    print(f"manifest: {result['manifest']}")
    for name, path in result["features"].items():
        print(f"\n-- features {name}: {path}")
        print(describe(path))
    if "run_dir" in result:
        print(f"\nrun folder: {result['run_dir']}")
        for k, v in sorted(result["metrics"].items()):
            if not isinstance(v, (dict, list)):
                print(f"  {k}: {_fmt(v)}")
    real = result.get("real")
    if real is not None:
        print(
            "\n-- the trained run on real CREMA-D takes it never saw (demo classes: "
            "happy / neutral / sad; the other emotions have no demo class)"
        )
        names = {
            "clip_id": "clip",
            "label": "true label",
            "pred": "predicted",
            "top_p": "top probability",
        }
        if "zero_shot" in real:
            print(
                f"   beside what {DEFAULT_MODALITIES['face']}'s own network reads zero-shot (mean class "
                "probability over the take's frames; its 7 classes, no training):"
            )
            names |= {"zero_shot": "face net zero-shot", "zero_shot_p": "its probability"}
        show = real[[c for c in names if c in real]].rename(columns=names)
        print(show.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if result["skipped"]:
        print("\nnot run (not available yet):")
        for s in result["skipped"]:
            print(f"  - {s}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``avemo demo`` (also ``python -m avemo.workflows.demo``)."""
    p.add_argument(
        "-o", "--out", type=Path, help="demo folder (default: $AVEMO_DEMO_DIR or ./demo)"
    )
    p.add_argument("--device", default=settings.current().device, help="cpu or cuda")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="training config overrides")


def run(a: argparse.Namespace) -> int:
    run_demo(a.out.expanduser().resolve() if a.out else None, a.device, a.overrides)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return module_main("demo", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
