"""README's "A five-minute tour" commands, as printed, on real footage (RAVDESS actor 05).

The commands are read from README.md itself. What the test changes, and only that: ROOT points
at ``../shared/data/ravdess-a05``, ``DEVICE=cpu``, the outputs (manifests/, features/, runs/,
predictions/) go to a temporary folder instead of the repository, the media file given to
``predict`` is one of the actor's takes, and ``fuse-train`` / ``ablate`` train shorter
(``trainer.max_epochs`` and ``data.max_rows`` appended to ``ARGS``). Every step must succeed and
every label a test partition holds must have been seen in training.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
A05 = REPO.parent / "shared" / "data" / "ravdess-a05"
STAMP = Path(sys.executable).parent.parent / ".avemo-setup"
FAST = "trainer.max_epochs=2 data.max_rows=48"

pytestmark = [
    pytest.mark.skipif(
        not A05.is_dir(),
        reason="needs the shared RAVDESS actor 05 footage in "
        "../shared/data/ravdess-a05 (not part of the repository)",
    ),
    pytest.mark.slow,  # the grid's 72 cells: about 4 min on a quiet 2-core CPU, 11 under load
    pytest.mark.realdata,
]


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    start = text.index("## A five-minute tour")
    section = text[start : text.index("\n## ", start + 1)]
    lines = [
        ln for block in re.findall(r"```bash\n(.*?)```", section, re.S) for ln in block.splitlines()
    ]
    return [re.sub(r"\s+#.*$", "", line).strip() for line in lines if line.strip()]


def _adapt(tokens: list[str], tmp: Path, run_dir: Path | None) -> list[str]:
    """The README command with only the test's changes (see the module docstring)."""
    out = []
    for t in tokens:
        key, sep, val = t.partition("=")
        if sep and key == "ROOT":
            t = f"ROOT={A05}"
        elif sep and key == "DEVICE":
            t = "DEVICE=cpu"
        elif sep and key == "OUT":
            t = f"OUT={tmp / val}"
        elif sep and key == "ARGS" and tokens[1] in ("fuse-train", "ablate"):
            t = f"ARGS={val} {FAST}"
        elif t.startswith(("runs/", "predictions/")):
            t = str(run_dir) if "<run>" in t else str(tmp / t)
        elif t.startswith("/data/"):
            t = str(next(iter(sorted((A05 / "video").glob("01-*.mp4")))))
        out.append(t)
    if out[0] == "make":  # outputs into tmp; the environment is already set up
        out[1:1] = [
            "-o",
            str(STAMP),
            f"MANIFEST={tmp}/manifests/ravdess.csv",
            f"FEATURES={tmp}/features/ravdess",
            f"RUNS={tmp}/runs",
        ]
        if tokens[1] == "features":
            out.append("ARGS=-q")
    else:
        out[0] = str(REPO / out[0])
    return out


def test_the_readme_commands_run_on_real_footage(tmp_path):
    cmds = readme_commands()
    assert [c.split()[1] for c in cmds] == [
        "manifest",
        "features",
        "fuse-train",
        "ablate",
        "report",
        "predict",
    ], cmds
    run_dir = None
    for line in cmds:
        tokens = shlex.split(line)
        if tokens[1] == "predict":
            run_dir = next(iter(sorted((tmp_path / "runs" / "zhou_relation_fbp").iterdir())))
        argv = _adapt(tokens, tmp_path, run_dir)
        proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=1500)
        assert proc.returncode == 0, f"{line}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"

    manifest = pd.read_csv(tmp_path / "manifests" / "ravdess.csv")
    assert len(manifest) == 60 and manifest["video"].notna().sum() == 14
    # the one run of fuse-train: every test / val label was seen in training
    run = next(iter((tmp_path / "runs" / "zhou_relation_fbp").iterdir()))
    _labels_seen_in_training(run, manifest)
    report = json.loads((run / "data_report.json").read_text())
    assert report["status_counts"] == {
        "face:no_video": 46
    }  # the audio-only takes: a missing modality
    # every cell of the grid trained, on folds that hold every class
    grid = tmp_path / "runs" / "ablate" / "zhou-ravdess"
    table = pd.read_csv(grid / "results.csv")
    assert len(table) == 72 and set(table["status"]) == {"done"}, table["status"].value_counts()
    for cell_run in table["run_dir"].head(3):
        _labels_seen_in_training(Path(cell_run), manifest)
    assert (grid / "report.md").is_file()
    pred = pd.read_csv(tmp_path / "predictions" / "predictions.csv")
    probs = pred[[c for c in pred.columns if c.startswith("p_")]]
    assert len(pred) == 1 and abs(probs.sum(axis=1).iloc[0] - 1) < 1e-4


def _labels_seen_in_training(run: Path, manifest: pd.DataFrame) -> None:
    folds = pd.read_csv(run / "folds.csv").merge(manifest[["clip_id", "label"]], on="clip_id")
    train = set(folds.loc[folds["partition"] == "train", "label"])
    for part in ("val", "test"):
        held = set(folds.loc[folds["partition"] == part, "label"])
        assert held and held <= train, (run, part, held - train)
