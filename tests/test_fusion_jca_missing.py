"""JCA on a clip that lacks one stream entirely (``no_audio``, or no face in any frame): the
datamodule keeps such clips with the missing stream masked, and the model attends and pools over
the stream the clip has -- its logits follow that stream -- instead of pooling over no row at
all (logits of exactly 0, so every such clip voted for the first class). Clips with both streams
are computed as before: the released-code equivalence lives in test_fusion_models_reference."""

from __future__ import annotations

import torch

from avemo.fusion import registry
from avemo.fusion.spec import TaskSpec

registry.load_all()


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    task = TaskSpec("clip", 3, classes=("a", "b", "c"))
    return registry.MODELS.build("jca", inputs={"face": (6,), "audio": (5,)}, task=task).eval()


def _batch(t: int = 20) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "face": torch.randn(3, t, 6, generator=g),
        "audio": torch.randn(3, t, 5, generator=g),
        "face_mask": torch.ones(3, t, dtype=torch.bool),
        "audio_mask": torch.ones(3, t, dtype=torch.bool),
    }


def test_a_clip_without_audio_is_predicted_from_its_faces():
    net, b = _model(), _batch()
    b["audio_mask"][1] = False  # clip 1: no_audio
    b["face_mask"][2] = False  # clip 2: no face in any frame
    with torch.no_grad():
        y = net(b)
        assert y[1].abs().sum() > 0 and y[2].abs().sum() > 0
        other = {k: v.clone() for k, v in b.items()}
        other["face"][1] += 1.0  # its faces decide it ...
        other["audio"][1] += 5.0  # ... not the masked audio values
        other["audio"][2] -= 1.0  # clip 2: the audio it has decides it
        y2 = net(other)
    assert not torch.allclose(y2[1], y[1]) and not torch.allclose(y2[2], y[2])
    torch.testing.assert_close(y2[0], y[0])  # the full clip is untouched by the others
    only_faces = {k: v.clone() for k, v in b.items()}
    only_faces["face"][1] += 1.0
    with torch.no_grad():
        y3 = net(only_faces)
    torch.testing.assert_close(y3[1], y2[1])  # masked audio values change nothing


def test_clips_with_both_streams_are_computed_as_before():
    """The fallback touches only clips with no row holding both streams: a clip whose audio
    ends early is still attended and pooled over the rows both hold (its face-only tail
    zeroed), exactly as when that tail's faces are zero too."""
    net, b = _model(), _batch()
    b["audio_mask"][0, 12:] = False
    zeroed = {k: v.clone() for k, v in b.items()}
    zeroed["face"][0, 12:] = 0.0
    zeroed["face"][0, 12:] += 7.0  # any value there: rows outside both masks do not count
    with torch.no_grad():
        torch.testing.assert_close(net(b)[0], net(zeroed)[0])
