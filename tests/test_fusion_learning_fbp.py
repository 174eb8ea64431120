"""Learning test: a label that depends on the PRODUCT of an audio and a visual feature.

label = [mean_t a_t[0] * mean_t v_t[0] > 0] (sign agreement, an XOR of signs). A linear head
on concatenated pooled vectors cannot represent it; FBP's bilinear term can. Both models are
the same Zhou pipeline (identity encoders, masked mean pooling, linear head), trained the same
way with fixed seeds; only the fusion differs.
"""

from __future__ import annotations

import torch

from avemo.fusion.metrics import accuracy
from avemo.fusion.registry import LOSSES, MODELS, load_all
from avemo.fusion.spec import TaskSpec

load_all()

D, T = 4, 6


def _data(n: int, seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, T + 1, (n,), generator=g)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    a_level, v_level = torch.randn(n, generator=g), torch.randn(n, generator=g)
    audio = 0.3 * torch.randn(n, T, D, generator=g)
    visual = 0.3 * torch.randn(n, T, D, generator=g)
    audio[..., 0] += a_level[:, None]
    visual[..., 0] += v_level[:, None]
    audio[~mask] = 7.0  # padding garbage; the masks must hide it
    visual[~mask] = -7.0
    batch = {"audio": audio, "audio_mask": mask, "face": visual, "face_mask": mask}
    m = mask.unsqueeze(-1).float()
    pa = ((audio * m).sum(1) / m.sum(1))[:, 0]
    pv = ((visual * m).sum(1) / m.sum(1))[:, 0]
    return batch, (pa * pv > 0).long()


def _train_and_score(fusion: dict) -> float:
    torch.manual_seed(0)
    model = MODELS.build(
        "zhou",
        inputs={"face": (D,), "audio": (D,)},
        task=TaskSpec("clip", 2),
        visual="face",
        audio="audio",
        encoder="identity",
        temporal="mean",
        fusion=fusion,
    )
    train, y_train = _data(1024, seed=1)
    test, y_test = _data(1024, seed=2)
    loss_fn = LOSSES.build("cross_entropy")
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    g = torch.Generator().manual_seed(3)
    model.train()
    for _ in range(150):
        idx = torch.randint(0, 1024, (64,), generator=g)
        batch = {k: v[idx] for k, v in train.items()}
        opt.zero_grad()
        loss_fn(model(batch), y_train[idx]).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return float(accuracy(model(test), y_test))


def test_fbp_beats_concatenation_on_a_multiplicative_label() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: one thread avoids contention on a shared machine
    try:
        _check_fbp_beats_concat()
    finally:
        torch.set_num_threads(threads)


def _check_fbp_beats_concat() -> None:
    concat = _train_and_score({"name": "concat"})
    fbp = _train_and_score({"name": "fbp", "k": 5, "o": 32})
    assert concat < 0.7, f"a linear head on [a; v] should not solve a sign product ({concat:.3f})"
    assert fbp > 0.85, f"FBP should learn the product ({fbp:.3f})"
    assert fbp - concat > 0.2
