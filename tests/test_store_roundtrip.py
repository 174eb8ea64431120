"""Property-based round trips of the ragged store: whatever clips go in come out, clip for clip."""

from __future__ import annotations

import random
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from avemo.data.store import (
    STATUSES,
    ClipFeatures,
    FeatureFile,
    FeatureWriter,
    make_provenance,
    write_clips,
)

DTYPES = [np.float32, np.float16, np.uint8]
ROW_SHAPES = [(3,), (1,), (2, 3), (4, 1)]


@st.composite
def clip_sets(draw: st.DrawFn) -> tuple[list[ClipFeatures], np.dtype, tuple[int, ...]]:
    """A feature set's clips: one dtype and row shape, random lengths incl. empty clips."""
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    row_shape = draw(st.sampled_from(ROW_SHAPES))
    n = draw(st.integers(0, 12))
    ids = draw(
        st.lists(
            st.text("abcxyz0189_-/ é", min_size=1, max_size=8), min_size=n, max_size=n, unique=True
        )
    )
    clips = []
    for cid in ids:
        t = draw(st.sampled_from([0, 0, 1, 2, 5, 17]))
        status = (
            draw(st.sampled_from(STATUSES))
            if t == 0
            else draw(st.sampled_from(["ok", "ok", "no_face"]))
        )
        values = draw(hnp.arrays(dtype, (t, *row_shape)))
        ts = draw(hnp.arrays(np.float64, t, elements=st.floats(-1e6, 1e6)))
        mask = draw(hnp.arrays(np.bool_, t))
        msg = (
            draw(
                st.text(
                    st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]),
                    max_size=20,
                )
            )
            if status != "ok"
            else ""
        )
        clips.append(ClipFeatures(cid, values, ts, mask, status, msg))
    return clips, dtype, row_shape


def assert_clip_equal(
    got: ClipFeatures, want: ClipFeatures, dtype: np.dtype, row_shape: tuple
) -> None:
    assert got.clip_id == want.clip_id
    assert got.status == want.status and got.message == want.message
    assert got.values.dtype == dtype
    assert got.values.shape == (len(want.values), *row_shape)
    np.testing.assert_array_equal(got.values, want.values)  # NaN == NaN here
    np.testing.assert_array_equal(got.timestamps, want.timestamps)
    assert got.mask.dtype == np.bool_
    np.testing.assert_array_equal(got.mask, want.mask)


def check_file(
    path: Path, clips: list[ClipFeatures], dtype: np.dtype, row_shape: tuple, mmap: bool = False
) -> None:
    with FeatureFile(path, mmap=mmap) as ff:
        assert ff.clip_ids == [c.clip_id for c in clips]
        assert ff.n_rows == sum(len(c.values) for c in clips)
        if any(len(c.values) for c in clips):
            assert ff.row_shape == row_shape and ff.dtype == dtype
        for c in clips:
            assert_clip_equal(ff.clip(c.clip_id), c, dtype, row_shape)
        allr = ff.load_all()
        assert list(allr.offsets[1:] - allr.offsets[:-1]) == [len(c.values) for c in clips]
        for i, c in enumerate(clips):
            assert_clip_equal(allr.clip(i), c, dtype, row_shape)


SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(data=clip_sets(), mmap=st.booleans(), compression=st.sampled_from([None, None, "gzip"]))
def test_write_clips_round_trip(tmp_path_factory, data, mmap, compression) -> None:
    clips, dtype, row_shape = data
    path = tmp_path_factory.mktemp("rt") / "set.h5"
    write_clips(path, clips, make_provenance("t", {"a": 1}), compression=compression)
    check_file(path, clips, dtype, row_shape, mmap=mmap)


@SETTINGS
@given(
    data=clip_sets(),
    seed=st.integers(0, 2**31),
    shard=st.integers(1, 6),
    crash_at=st.integers(0, 12),
    first_finalized=st.booleans(),
    mmap=st.booleans(),
)
def test_writer_shards_resume_and_finalize_order(
    tmp_path_factory, data, seed, shard, crash_at, first_finalized, mmap
) -> None:
    """Clips added in random order, random shard sizes; the first writer is either abandoned
    mid-way (its buffer lost, like a killed process) or finalizes a partial file (a smaller
    manifest); a second writer resumes and finalizes in a random manifest order."""
    clips, dtype, row_shape = data
    rng = random.Random(seed)
    path = tmp_path_factory.mktemp("wr") / "set.h5"
    prov = make_provenance("t", {"a": 1})
    added = clips[:]
    rng.shuffle(added)
    w = FeatureWriter(path, prov, shard_clips=shard)
    for c in added[:crash_at]:
        w.add(c)
    if first_finalized:
        w.finalize(order=[c.clip_id for c in added[:crash_at]])
    del w  # killed: whatever was only buffered is gone
    w2 = FeatureWriter(path, prov, shard_clips=rng.randint(1, 6))
    done = w2.done()
    assert done <= {c.clip_id for c in added[:crash_at]}
    if first_finalized:
        assert done == {c.clip_id for c in added[:crash_at]}
    for c in added:
        if c.clip_id not in done:
            w2.add(c)
    order = [c.clip_id for c in clips]
    rng.shuffle(order)
    assert w2.finalize(order=order) == path
    assert not w2.shard_dir.exists() and not w2.tmp_path.exists()
    by_id = {c.clip_id: c for c in clips}
    check_file(path, [by_id[i] for i in order], dtype, row_shape, mmap=mmap)


def test_error_clips_with_unknown_row_shape_take_the_file_shape(tmp_path: Path) -> None:
    """The runner records a failed clip as ``empty(id, (), "error")`` before it knows the shape."""
    good = ClipFeatures("good", np.ones((3, 2, 5), np.float16), np.arange(3.0), np.ones(3, bool))
    bad = ClipFeatures.empty("bad", (), "error", "RuntimeError: broken")
    prov = make_provenance("t", {})
    w = FeatureWriter(tmp_path / "s.h5", prov, shard_clips=1)
    w.add(bad)  # a shard holding only the error clip: its own row shape is unknown
    w.add(good)
    w.finalize(order=["bad", "good"])
    with FeatureFile(tmp_path / "s.h5") as ff:
        assert ff.row_shape == (2, 5) and ff.dtype == np.float16
        b = ff.clip("bad")
        assert (
            b.values.shape == (0, 2, 5)
            and b.status == "error"
            and b.message == "RuntimeError: broken"
        )
        np.testing.assert_array_equal(ff.clip("good").values, good.values)


def test_row_shape_change_is_refused_at_add(tmp_path: Path) -> None:
    w = FeatureWriter(tmp_path / "s.h5", make_provenance("t", {}), shard_clips=4)
    w.add(ClipFeatures("a", np.ones((2, 3), np.float32), np.arange(2.0), np.ones(2, bool)))
    with pytest.raises(ValueError, match=r"clip b: row shape \[4\] differs"):
        w.add(ClipFeatures("b", np.ones((2, 4), np.float32), np.arange(2.0), np.ones(2, bool)))


def test_final_file_is_contiguous_and_memory_mapped(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    clips = [
        ClipFeatures(
            f"c{i}",
            rng.standard_normal((n, 8)).astype(np.float32),
            np.arange(n) / 25.0,
            rng.random(n) > 0.3,
        )
        for i, n in enumerate([5, 0, 9, 1])
    ]
    w = FeatureWriter(tmp_path / "s.h5", make_provenance("t", {}), shard_clips=2)
    for c in clips:
        w.add(c)
    path = w.finalize(order=[c.clip_id for c in clips])
    with h5py.File(path) as f:
        assert all(f[k].chunks is None for k in ("values", "timestamps", "mask"))
    with FeatureFile(path, mmap=True) as ff:
        assert ff.is_mmapped
        allr = ff.load_all()
        assert isinstance(allr.values, np.memmap)
        np.testing.assert_array_equal(allr.values, np.concatenate([c.values for c in clips]))
        np.testing.assert_array_equal(allr.mask, np.concatenate([c.mask for c in clips]))
    # compressed files are chunked, so they are read instead of mapped (same numbers)
    write_clips(tmp_path / "z.h5", clips, make_provenance("t", {}), compression="gzip")
    with FeatureFile(tmp_path / "z.h5", mmap=True) as ff:
        assert not ff.is_mmapped
        np.testing.assert_array_equal(
            ff.load_all().values, np.concatenate([c.values for c in clips])
        )


def test_unchanged_rerun_keeps_the_final_file(tmp_path: Path) -> None:
    prov = make_provenance("t", {})
    c = ClipFeatures("a", np.ones((2, 3), np.float32), np.arange(2.0), np.ones(2, bool))
    w = FeatureWriter(tmp_path / "s.h5", prov)
    w.add(c)
    w.finalize(order=["a"])
    inode = (tmp_path / "s.h5").stat().st_ino
    w2 = FeatureWriter(tmp_path / "s.h5", prov)
    assert w2.done() == {"a"}
    w2.finalize(order=["a"])
    assert (tmp_path / "s.h5").stat().st_ino == inode
    assert not w2.shard_dir.exists()


def test_nul_and_surrogates_in_messages_are_stored_visibly(tmp_path: Path) -> None:
    """An error message naming a non-UTF-8 file (surrogateescape) must not crash the write."""
    name = b"/data/caf\xe9.wav".decode("utf-8", "surrogateescape")
    c = ClipFeatures.empty("a", (2,), "error", "bad\x00byte")
    d = ClipFeatures.empty("b", (2,), "error", f"cannot open {name}")
    write_clips(tmp_path / "s.h5", [c, d], make_provenance("t", {}))
    with FeatureFile(tmp_path / "s.h5") as ff:
        assert ff.clip("a").message == "bad\ufffdbyte"
        assert ff.clip("b").message == "cannot open /data/caf\\udce9.wav"
    for bad in ("a\x00", name):
        with pytest.raises(ValueError, match="NUL or a character UTF-8 cannot hold"):
            ClipFeatures.empty(bad, (2,), "error")


def test_big_buffers_commit_by_size_and_write_clip_by_clip(tmp_path: Path, monkeypatch) -> None:
    """Shards close at the byte limit too (bounded memory for e.g. face crops), and big shards
    and consolidations copy clip by clip / in bounded buffers: same bytes either way."""
    from avemo.data.store import writer

    monkeypatch.setattr(writer, "_SHARD_BYTES", 1500)
    monkeypatch.setattr(writer, "_COPY_BUFFER_BYTES", 1000)
    rng = np.random.default_rng(3)
    clips = [
        ClipFeatures(
            f"c{i}",
            rng.integers(0, 255, (n, 4, 5), np.uint8),
            np.arange(n) / 30.0,
            rng.random(n) > 0.5,
        )
        for i, n in enumerate([30, 0, 50, 7, 90, 11, 40])
    ]
    w = FeatureWriter(tmp_path / "s.h5", make_provenance("crops", {}), shard_clips=1000)
    for c in clips:
        w.add(c)
    w.flush()
    sizes = [len(FeatureFile(p)) for p in w._shards()]
    assert sum(sizes) == len(clips) and len(sizes) >= 3  # the clip count limit was never reached
    order = [c.clip_id for c in clips][::-1]
    w.finalize(order=order)
    by_id = {c.clip_id: c for c in clips}
    check_file(tmp_path / "s.h5", [by_id[i] for i in order], np.dtype(np.uint8), (4, 5), mmap=True)
