"""data/timeline.py against hand-computed cases; the torch variant equals the numpy one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avemo.data.timeline import align, align_torch, default_window, frame_times

T = np.array([0.0, 1.0, 2.0])
V = np.array([[0.0], [10.0], [20.0]])
Q = np.array([-1.0, 0.4, 0.5, 0.6, 1.5, 3.0])


def test_nearest_hand_computed():
    out, ok = align(V, T, Q, "nearest")
    assert out[:, 0].tolist() == [0, 0, 0, 10, 10, 20]  # ties (0.5, 1.5) -> the earlier row
    assert ok.all()


def test_linear_hand_computed_with_edge_hold():
    out, ok = align(V, T, Q, "linear")
    np.testing.assert_allclose(out[:, 0], [0, 4, 5, 6, 15, 20])
    assert ok.all()


def test_mean_hand_computed_half_open_windows():
    t = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    v = np.arange(6.0)[:, None]
    out, ok = align(v, t, [0.1, 0.35], "mean", window=0.2)
    # [0.0, 0.2) -> rows 0, 1 -> 0.5 ; [0.25, 0.45) -> rows 3, 4 -> 3.5
    np.testing.assert_allclose(out[:, 0], [0.5, 3.5])
    out, ok = align(v, t, [0.0, 0.2, 0.4], "mean")  # default window = 0.2 (target spacing)
    np.testing.assert_allclose(
        out[:, 0], [0.0, 1.5, 3.5]
    )  # [-.1,.1)->{0}; [.1,.3)->{1,2}; [.3,.5)->{3,4}
    out, ok = align(v, t, [2.0], "mean", window=0.5)
    assert not ok[0] and out[0, 0] == 0
    assert default_window([0.0, 0.04, 0.08]) == pytest.approx(0.04)


def test_mask_skips_invalid_rows():
    m = np.array([True, False, True])
    out, ok = align(V, T, [0.5, 0.9, 1.0], "linear", mask=m)
    np.testing.assert_allclose(out[:, 0], [5, 9, 10])  # interpolates 0 -> 20 across the hole
    out, _ = align(V, T, [0.9, 1.1], "nearest", mask=m)
    assert out[:, 0].tolist() == [0, 20]
    out, ok = align(V, T, [1.0], "mean", window=0.5, mask=m)
    assert not ok[0]


def test_max_gap_marks_far_targets_invalid():
    m = np.array([True, False, True])
    out, ok = align(V, T, [0.1, 1.0, 1.9, 5.0], "linear", mask=m, max_gap=0.5)
    assert ok.tolist() == [True, False, True, False]
    np.testing.assert_allclose(out[:, 0], [1, 0, 19, 0])


def test_no_valid_rows_empty_inputs_and_bad_method():
    out, ok = align(V, T, Q, "nearest", mask=np.zeros(3, bool))
    assert out.shape == (6, 1) and not ok.any() and (out == 0).all()
    out, ok = align(np.zeros((0, 4)), np.zeros(0), Q, "linear")
    assert out.shape == (6, 4) and not ok.any()
    out, ok = align(V, T, [], "mean")
    assert out.shape == (0, 1) and ok.shape == (0,)
    with pytest.raises(ValueError, match="unknown timeline method"):
        align(V, T, Q, "cubic")
    with pytest.raises(ValueError, match="differ in length"):
        align(V, T[:2], Q)


def test_unsorted_source_multidim_rows_and_dtypes():
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, 5, 40))
    v = rng.normal(size=(40, 2, 3))
    perm = rng.permutation(40)
    q = frame_times(125, 25.0)
    for method in ("nearest", "linear", "mean"):
        a, ma = align(v, t, q, method)
        b, mb = align(v[perm], t[perm], q, method)
        np.testing.assert_allclose(a, b)
        assert a.shape == (125, 2, 3) and (ma == mb).all()
    ints = np.arange(3)
    assert align(ints, T, Q, "nearest")[0].dtype == ints.dtype
    assert align(ints, T, Q, "linear")[0].dtype.kind == "f"


def test_upsample_speech_embedding_rate_to_video_frames():
    """12.5 Hz rows stamped at window centres onto 25 fps frames: each frame gets the row whose
    centre is closest; a 100 Hz MFCC-like sequence averages onto 25 fps windows."""
    ts = 0.391 + 0.08 * np.arange(10)
    v = np.arange(10.0)[:, None]
    out, _ = align(v, ts, frame_times(25, 25.0), "nearest")
    want = np.abs(frame_times(25, 25.0)[:, None] - ts[None]).argmin(axis=1)
    np.testing.assert_array_equal(out[:, 0], want)
    t100 = np.arange(100) * 0.01
    out, ok = align(t100[:, None], t100, frame_times(25, 25.0), "mean")
    np.testing.assert_allclose(out[1:, 0], frame_times(25, 25.0)[1:] - 0.005)  # 4 rows per frame
    assert ok.all()


@pytest.mark.parametrize("method", ["nearest", "linear", "mean"])
def test_torch_variant_equals_numpy(method):
    rng = np.random.default_rng(1)
    t = rng.uniform(0, 4, 50)
    v = rng.normal(size=(50, 7)).astype(np.float32)
    m = rng.uniform(size=50) > 0.3
    q = np.linspace(-0.5, 4.5, 90)
    a, ma = align(v, t, q, method, mask=m, max_gap=0.3)
    b, mb = align_torch(
        torch.from_numpy(v),
        torch.from_numpy(t),
        torch.from_numpy(q),
        method,
        mask=torch.from_numpy(m),
        max_gap=0.3,
    )
    np.testing.assert_allclose(b.numpy(), a, rtol=1e-5, atol=1e-6)
    assert (mb.numpy() == ma).all() and b.dtype == torch.float32
