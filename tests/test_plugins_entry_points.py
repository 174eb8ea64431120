"""Third-party plugins register through Python entry points, the same way for every registry:
an installed distribution (a real ``*.dist-info`` on ``sys.path``) adds a fusion model and a
dataset adapter, and ``avemo list`` / configs / manifests find them with no avemo edit."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PLUGIN = '''
"""A third-party avemo plugin (test fixture)."""
from torch import nn

from avemo.fusion.models.base import FusionModel, Head, get_mask, masked_mean


class MeanHead(FusionModel):
    """Masked mean of every modality, concatenated, then a linear head."""

    def __init__(self, inputs, task, scale: float = 1.0) -> None:
        super().__init__(inputs, task)
        self.scale = scale
        self.head = Head(sum(s[-1] for s in self.inputs.values()), self.task.n_out)

    def forward(self, batch):
        import torch
        feats = [masked_mean(batch[m], get_mask(batch, m)) for m in sorted(self.inputs)]
        return self.head(torch.cat(feats, -1) * self.scale)
'''

ADAPTERS = '''
from avemo.data.adapters import DATASETS
from avemo.data.adapters.folder import FolderAdapter


@DATASETS.register("plugin_folder")
class PluginFolder(FolderAdapter):
    """A folder-per-class corpus, from a plugin."""
'''


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("site")
    pkg = root / "avemo_test_plugin"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    (pkg / "adapters.py").write_text(textwrap.dedent(ADAPTERS))
    dist = root / "avemo_test_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: avemo-test-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[avemo.fusion_models]\nplugin_mean = avemo_test_plugin:MeanHead\n\n"
        "[avemo.datasets]\nplugin_folder = avemo_test_plugin.adapters\n"
    )
    return root


def _run(plugin_path: Path, code: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(plugin_path), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )


def test_entry_point_plugins_are_listed_checked_and_built(plugin_path, tmp_path):
    code = f"""
import yaml
from avemo.cli import main
assert main(["list", "models"]) == 0
assert main(["list", "datasets"]) == 0
from avemo.fusion.config import load_config, ConfigError
from avemo.fusion.registry import MODELS
from avemo.fusion.spec import TaskSpec
cfg = {{"data": {{"manifest": "m.csv", "features": {{"face": "f.h5"}}}}, "model": {{"name": "plugin_mean", "scale": 2.0}}}}
load_config(cfg)
try:
    load_config(cfg, ["model.scael=3"])
except ConfigError as e:
    print("ERR", e)
m = MODELS.build("plugin_mean", inputs={{"face": (4,)}}, task=TaskSpec("clip", 3))
print("NAME", MODELS.name_of(m))
from avemo.data.adapters import build_manifest
root = {str(tmp_path / "corpus")!r}
import os
for c in ("happy", "sad"):
    os.makedirs(f"{{root}}/{{c}}", exist_ok=True)
    open(f"{{root}}/{{c}}/a_{{c}}.wav", "wb").close()
print("ROWS", len(build_manifest("plugin_folder", root)))
"""
    p = _run(plugin_path, code)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "plugin_mean" in out and "Masked mean of every modality" in out
    assert "plugin_folder" in out and "from a plugin" in out
    assert "ERR model.scael: unknown option, did you mean scale?" in out
    assert "NAME plugin_mean" in out and "ROWS 2" in out
