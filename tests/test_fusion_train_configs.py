"""Every ready config in workflows/configs resolves, and its model builds and runs a batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from avemo.fusion.config import ConfigError, load_config
from avemo.fusion.spec import TaskSpec

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "workflows" / "configs").glob("*.yaml"))
ROW_SHAPES = {
    "face": (512,),
    "audio": (64,),
    "vggish": (128,),
    "mfcc": (39,),
    "compare": (130,),
    "egemaps": (25,),
    "pitch": (4,),
    "logmel": (64,),
    "speech": (96,),
    "speaker": (256,),
    "func": (6373,),
}
CLASSES = 7


def test_the_published_configs_are_all_there():
    names = {p.stem for p in CONFIGS}
    want = {f"zhou_{a}_{f}" for a in ("self", "relation", "transformer") for f in ("concat", "fbp")}
    assert (
        want
        | {
            "zhang_attention_fbp",
            "jca",
            "lfan",
            "unimodal_face",
            "unimodal_audio",
            "demo_fbp",
            "speech_emotion",
        }
        <= names
    )


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_resolves_and_model_runs(path):
    from avemo.fusion import registry

    registry.load_all()
    cfg = load_config(path)
    assert cfg.name == path.stem
    mods = list(cfg.data.features)
    frame = cfg.task.type == "frame"
    task = TaskSpec("frame", len(cfg.data.targets)) if frame else TaskSpec("clip", CLASSES)
    inputs = {m: ROW_SHAPES[m] for m in mods}
    model = registry.MODELS.build(cfg.model.name, inputs=inputs, task=task, **cfg.model.options())
    torch.manual_seed(0)
    T = 40
    batch = {}
    for m in mods:
        batch[m] = torch.randn(2, T, *inputs[m])
        batch[f"{m}_mask"] = torch.arange(T)[None].expand(2, T) < torch.tensor([[T], [25]])
    out = model(batch)
    assert out.shape == ((2, T, task.n_out) if frame else (2, CLASSES))
    assert torch.isfinite(out).all()


def test_base_inheritance_replaces_another_models_options_and_drops_null_features():
    d = CONFIGS[0].parent
    z = load_config(d / "zhang_attention_fbp.yaml")
    assert "temporal" not in z.model.options()
    assert z.data.manifest == str(d.parents[1] / "manifests" / "afew.csv")  # relative to its file
    u = load_config(d / "unimodal_face.yaml", ["data.features.face=/elsewhere/face.h5"])
    assert u.data.features == {"face": "/elsewhere/face.h5"}
    rel = load_config(d / "zhou_relation_concat.yaml")
    model = rel.model.options()
    assert model["temporal"] == "fan_relation" and model["fusion"] == {"name": "concat"}
    assert model["encoder"]["per_modality"]["audio"]["name"] == "audio_cnn"


def test_circular_base_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(tmp_path / "a.yaml")
