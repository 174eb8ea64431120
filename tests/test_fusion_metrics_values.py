"""Metrics and losses against hand-computed values (and scikit-learn where it has them)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import f1_score, recall_score

from avemo.fusion import metrics as M
from avemo.fusion.registry import LOSSES, load_all

load_all()

# target / prediction used for the categorical hand computation
Y = [0, 0, 0, 1, 1, 2]
P = [0, 0, 1, 1, 2, 2]


def test_ccc_hand_values_and_constant_cases() -> None:
    # x=[1,2,3,4], y=2x: means 2.5, 5; var 1.25, 5; cov 2.5 -> 5 / (1.25 + 5 + 6.25) = 0.4
    assert float(M.ccc([1, 2, 3, 4], [2, 4, 6, 8])) == pytest.approx(0.4)
    assert float(M.ccc([1, 2, 3], [1, 2, 3])) == pytest.approx(1.0)
    assert float(M.ccc([1, 2, 3], [3, 2, 1])) == pytest.approx(-1.0)
    assert float(M.ccc([3, 3, 3], [3, 3, 3])) == 1.0  # same constant: perfect agreement
    assert float(M.ccc([1, 1, 1], [1, 2, 3])) == 0.0  # constant vs varying
    assert float(M.ccc([2, 2], [1, 1])) == 0.0  # different constants
    # mask selects frames; the padded outlier must not count
    x = torch.tensor([[1.0, 2.0, 99.0], [3.0, 4.0, -99.0]])
    y = torch.tensor([[2.0, 4.0, 0.0], [6.0, 8.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, True, False]])
    assert float(M.ccc(x, y, mask)) == pytest.approx(0.4)
    with pytest.raises(ValueError):
        M.ccc([1.0, 2.0], [1.0])


def test_pcc_and_rmse_hand_values() -> None:
    # centred x=[-1,0,1], y=[-1,1,0]: sum xy = 1, norms sqrt(2) each -> 0.5
    assert float(M.pcc([1, 2, 3], [1, 3, 2])) == pytest.approx(0.5)
    assert float(M.pcc([1, 2, 3], [5, 5, 5])) == 0.0
    assert float(M.rmse([0, 0], [3, 4])) == pytest.approx(np.sqrt(12.5))
    assert float(M.rmse(np.zeros(3), np.zeros(3))) == 0.0


def test_categorical_hand_values() -> None:
    cm = M.confusion_matrix(P, Y, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert cm.tolist() == sk_confusion(Y, P, labels=[0, 1, 2]).tolist()
    assert float(M.accuracy(P, Y)) == pytest.approx(4 / 6)
    # recalls 2/3, 1/2, 1
    assert float(M.uar(P, Y, 3)) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    # F1: class0 2*2/(4+0+1)=0.8, class1 2/(2+1+1)=0.5, class2 2/(2+1+0)=2/3
    assert float(M.macro_f1(P, Y, 3)) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert float(M.uar(P, Y, 3)) == pytest.approx(recall_score(Y, P, average="macro"))
    assert float(M.macro_f1(P, Y, 3)) == pytest.approx(f1_score(Y, P, average="macro"))


def test_categorical_from_logits_and_absent_classes() -> None:
    logits = torch.nn.functional.one_hot(torch.tensor(P), 5).float()  # 5 classes, 2 never seen
    assert float(M.accuracy(logits, Y)) == pytest.approx(4 / 6)
    assert float(M.uar(logits, Y, 5)) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert float(M.macro_f1(logits, Y, 5)) == pytest.approx(f1_score(Y, P, average="macro"))
    out = M.classification_metrics(logits, torch.tensor(Y), 5)
    assert out["accuracy"] == pytest.approx(4 / 6) and len(out["confusion"]) == 5


def test_regression_metrics_per_target() -> None:
    pred = np.stack([[1, 2, 3, 4], [1, 1, 1, 1]], 1).astype(float)
    true = np.stack([[2, 4, 6, 8], [1, 2, 3, 4]], 1).astype(float)
    out = M.regression_metrics(pred, true, names=["valence", "arousal"])
    assert out["ccc_valence"] == pytest.approx(0.4) and out["ccc_arousal"] == 0.0
    assert out["pcc_valence"] == pytest.approx(1.0)


def test_ccc_centering_hand_example() -> None:
    x1, x2, x3 = np.array([0.0, 0.2, 0.4]), np.array([0.1, 0.3, 0.5]), np.array([0.0, 0.4, 0.2])
    # pairwise CCC: (1,2) 16/19, (1,3) 1/2, (2,3) 8/19 -> g = 51/76, 48/76, 35/76
    # mu = 0.2, 0.3, 0.2 -> w = (0.2*51 + 0.3*48 + 0.2*35) / 134 = 31.6 / 134
    w = 31.6 / 134
    expected = np.array([-0.2, 0.2 / 3, 0.4 / 3]) + w
    np.testing.assert_allclose(M.ccc_centering([x1, x2, x3]), expected, atol=1e-12)
    # shifting every fold shifts the result; clipping to [-1, 1]
    np.testing.assert_allclose(
        M.ccc_centering([x1 + 0.9, x2 + 0.9, x3 + 0.9]), np.clip(expected + 0.9, -1, 1), atol=1e-12
    )
    np.testing.assert_allclose(M.ccc_centering([torch.tensor([2.0, -3.0, 0.5])]), [1.0, -1.0, 0.5])
    with pytest.raises(ValueError):
        M.ccc_centering([x1, x1[:2]])


def test_ccc_loss_equals_one_minus_metric_and_is_safe() -> None:
    torch.manual_seed(0)
    pred = torch.randn(2, 5, 2, requires_grad=True)
    true = torch.randn(2, 5, 2)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    loss = LOSSES.build("ccc")(pred, true, mask)  # sum over the two targets
    expected = sum(1 - M.ccc(pred[..., k].detach(), true[..., k], mask) for k in range(2))
    assert loss.item() == pytest.approx(float(expected))
    loss.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[1, 3:].abs().sum() == 0
    nan_true = true.clone()
    nan_true[1, 3:] = float("nan")  # unlabelled frames carry NaN targets
    assert LOSSES.build("ccc")(pred, nan_true, mask).item() == pytest.approx(loss.item())
    assert torch.isfinite(LOSSES.build("mse")(pred, nan_true, mask))
    mean = LOSSES.build("ccc", reduction="mean")(pred, true, mask)
    assert mean.item() == pytest.approx(float(expected) / 2)
    # constant predictions: finite loss and gradient; identical constants -> loss 0
    const = torch.zeros(1, 4, 1, requires_grad=True)
    loss = LOSSES.build("ccc")(const, torch.ones(1, 4, 1))
    loss.backward()
    assert loss.item() == 1.0 and torch.isfinite(const.grad).all()
    assert float(LOSSES.build("ccc")(torch.ones(1, 4, 1), torch.ones(1, 4))) == 0.0
    # per-window variant: mean over windows of the per-window 1 - CCC
    per = LOSSES.build("ccc", per_sequence=True)(pred, true, mask)
    windows = [
        LOSSES.build("ccc")(pred[i : i + 1], true[i : i + 1], mask[i : i + 1]) for i in range(2)
    ]
    assert per.item() == pytest.approx(float(sum(windows).item() / 2))


def test_mse_and_cross_entropy_hand_values() -> None:
    pred = torch.tensor([[[1.0], [2.0], [50.0]]])
    true = torch.tensor([[0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False]])
    assert float(LOSSES.build("mse")(pred, true, mask)) == pytest.approx((1 + 4) / 2)
    logits = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    target = torch.tensor([0, 1])
    assert float(LOSSES.build("cross_entropy")(logits, target)) == pytest.approx(np.log(2))
    # confident right answer with label smoothing eps: -(1 - eps/2) log p1 - (eps/2) log p0
    logits = torch.tensor([[0.0, np.log(3.0)]])  # p = [0.25, 0.75]
    ls = LOSSES.build("cross_entropy", label_smoothing=0.2)(logits, torch.tensor([1]))
    assert float(ls) == pytest.approx(-(0.9 * np.log(0.75) + 0.1 * np.log(0.25)))
    # class weights: weighted mean of per-sample losses, sum(w_i l_i) / sum(w_i)
    logits = torch.tensor([[0.0, np.log(3.0)], [0.0, np.log(3.0)]])
    ce = LOSSES.build("cross_entropy", class_weights=[3.0, 1.0])(logits, torch.tensor([0, 1]))
    assert float(ce) == pytest.approx((3 * -np.log(0.25) + 1 * -np.log(0.75)) / 4)
    # per-frame classification with a mask
    frames = torch.zeros(1, 3, 2)
    frames[0, 2] = torch.tensor([9.0, -9.0])
    out = LOSSES.build("cross_entropy")(
        frames, torch.tensor([[0, 1, 1]]), torch.tensor([[1, 1, 0]]).bool()
    )
    assert float(out) == pytest.approx(np.log(2))
