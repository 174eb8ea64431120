"""The one device rule (avemo.devices) as stage one sees it: feature sets and face backbones."""

from __future__ import annotations

import pytest
import torch

from avemo.devices import DeviceFallbackWarning, resolve_device
from avemo.errors import UsageError
from avemo.extract.registry import BACKBONES, FEATURE_SETS, load_all

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def test_stage_one_refuses_the_words_stage_two_refuses() -> None:
    load_all()
    for bad in ("tpu", "cuda:x", "mps"):
        with pytest.raises(UsageError, match="device must be auto, cpu, cuda, cuda:N or gpu"):
            FEATURE_SETS.build("face_crops", {}, bad)


def test_auto_is_the_gpu_when_there_is_one() -> None:
    want = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("auto") == want and resolve_device(None) == want
    load_all()
    assert FEATURE_SETS.build("face_crops", {}, "auto").device == str(want)


@NO_CUDA
@pytest.mark.parametrize("ask", ["cuda", "gpu", "cuda:1"])
def test_a_gpu_asked_for_in_stage_one_runs_on_the_cpu_with_a_named_notice(ask: str) -> None:
    load_all()
    with pytest.warns(DeviceFallbackWarning, match="face_crops: .*no CUDA GPU is visible"):
        assert FEATURE_SETS.build("face_crops", {}, ask).device == "cpu"
    name = "fer2013_minixception"
    with pytest.warns(DeviceFallbackWarning, match=f"backbone '{name}'"):
        assert BACKBONES.build(name, device=ask).device == torch.device("cpu")
