"""The extraction runner in-process: failures isolated, resume skips committed clips, the final
file is the same whatever the batch/shard sizes, progress on stderr, config mismatch handling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import test_runner_plugin as plugin
from test_runner_plugin import Interrupt, make_wav_corpus

from avemo.data.store import ConfigMismatchError, FeatureFile
from avemo.extract.runner import run_features

SET = "test_wavstats"
N = 24


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_wav_corpus(tmp_path_factory.mktemp("wavs"), n=N, broken=(7, 19))


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref")
    return run_features(corpus, [SET], out, batch_clips=N, shard_clips=N, progress=False)[SET]


@pytest.fixture(autouse=True)
def _reset_plugin():
    plugin.CALLS.clear()
    plugin.INTERRUPT_AFTER[0] = -1
    yield
    plugin.INTERRUPT_AFTER[0] = -1


def assert_same_file(a: Path, b: Path) -> None:
    with FeatureFile(a) as fa, FeatureFile(b) as fb:
        assert fa.clip_ids == fb.clip_ids
        assert fa.status == fb.status and fa.message == fb.message
        ra, rb = fa.load_all(), fb.load_all()
        np.testing.assert_array_equal(ra.offsets, rb.offsets)
        assert ra.values.dtype == rb.values.dtype and ra.values.shape == rb.values.shape
        np.testing.assert_array_equal(ra.values, rb.values)
        np.testing.assert_array_equal(ra.timestamps, rb.timestamps)
        np.testing.assert_array_equal(ra.mask, rb.mask)
        assert fa.provenance["config_hash"] == fb.provenance["config_hash"]


def test_bad_clips_get_error_status_and_the_run_goes_on(reference: Path) -> None:
    with FeatureFile(reference) as ff:
        assert ff.clip_ids == [f"c{i:03d}" for i in range(N)]  # manifest order
        st = dict(zip(ff.clip_ids, ff.status, strict=True))
        msg = dict(zip(ff.clip_ids, ff.message, strict=True))
        assert st["c007"] == st["c019"] == "error"
        assert "LibsndfileError" in msg["c007"] or "Error" in msg["c007"], msg["c007"]
        assert st["c003"] == "no_audio"  # zero samples
        assert ff.status_counts() == {"ok": N - 3, "error": 2, "no_audio": 1}
        silent = ff.clip("c005")
        assert silent.status == "ok" and len(silent.values) and not silent.mask.any()
        assert ff.clip("c007").values.shape == (0, 4)
        assert ff.clip("c000").values.shape[1:] == (4,) and ff.provenance["rate_hz"] == 100.0
        t = ff.clip("c001").timestamps
        assert t[0] == 0 and np.all(np.diff(t) > 0)


@pytest.mark.parametrize(("batch", "shard"), [(1, 1), (3, 5), (7, 2), (50, 50)])
def test_same_file_whatever_batch_and_shard_sizes(corpus, reference, tmp_path, batch, shard):
    path = run_features(
        corpus, [SET], tmp_path, batch_clips=batch, shard_clips=shard, progress=False
    )[SET]
    assert_same_file(path, reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{SET}.h5"]  # no shards / tmp left


def test_resume_extracts_only_uncommitted_clips(corpus, reference, tmp_path) -> None:
    plugin.INTERRUPT_AFTER[0] = 11  # the 12th extract call raises
    with pytest.raises(Interrupt):
        run_features(corpus, [SET], tmp_path, batch_clips=4, shard_clips=3, progress=False)
    assert not (tmp_path / f"{SET}.h5").exists()
    shards = sorted((tmp_path / f"{SET}.h5.shards").glob("shard-*.h5"))
    assert shards, "clips extracted before the crash were committed"
    first = list(plugin.CALLS)
    # c007 raised inside its batch: the clips before it are kept, only c007 is retried alone
    assert first == [f"c{i:03d}" for i in range(8)] + ["c007"] + [f"c{i:03d}" for i in range(8, 10)]
    committed = [cid for s in shards for cid in FeatureFile(s).clip_ids]
    # 10 results reached the writer: 3 shards of 3 committed, c009 only buffered (lost, as
    # in a killed process)
    assert committed == [f"c{i:03d}" for i in range(9)]
    plugin.CALLS.clear()
    plugin.INTERRUPT_AFTER[0] = -1
    path = run_features(corpus, [SET], tmp_path, batch_clips=5, shard_clips=4, progress=False)[SET]
    redo = [f"c{i:03d}" for i in range(9, N)]
    assert [c for c in plugin.CALLS if c != "c019"] == [c for c in redo if c != "c019"]
    assert plugin.CALLS.count("c019") == 2  # raised in its batch, retried alone
    assert_same_file(path, reference)
    plugin.CALLS.clear()
    run_features(corpus, [SET], tmp_path, progress=False)  # all done: no extraction at all
    assert plugin.CALLS == []
    assert_same_file(path, reference)


def test_keyboard_interrupt_keeps_finished_clips(corpus, tmp_path, monkeypatch) -> None:
    """Ctrl-C flushes what was extracted, so nothing finished has to be redone."""
    from avemo.extract.registry import FEATURE_SETS

    cls = FEATURE_SETS.get(SET)
    orig = cls.extract

    def extract(self, clips):
        for res in orig(self, clips):
            if len(plugin.CALLS) > 5:
                raise KeyboardInterrupt
            yield res

    monkeypatch.setattr(cls, "extract", extract)
    with pytest.raises(KeyboardInterrupt):
        run_features(corpus, [SET], tmp_path, batch_clips=10, shard_clips=100, progress=False)
    monkeypatch.undo()
    (shard,) = (tmp_path / f"{SET}.h5.shards").glob("shard-*.h5")
    # the 5 results yielded before Ctrl-C are committed, though the shard was not full
    assert FeatureFile(shard).clip_ids == [f"c{i:03d}" for i in range(5)]


def test_progress_lines_on_stderr(corpus, tmp_path, capfd) -> None:
    """stderr is not a terminal here: plain lines (no \\r redraws), rates and an h:mm:ss ETA."""
    run_features(corpus, [SET], tmp_path, batch_clips=4, progress=True)
    err = capfd.readouterr().err
    assert "\r" not in err
    last = [ln for ln in err.splitlines() if ln.startswith(f"[{SET}] {N}/{N} clips")][-1]
    assert "clips/s" in last and "audio-s/s" in last and "ETA 0:00:00" in last
    assert "2 not ok" not in last and f"{3} not ok" in last
    assert f"wrote {tmp_path / (SET + '.h5')}" in err


def test_config_mismatch_refused_or_written_beside(corpus, reference, tmp_path) -> None:
    run_features(corpus, [SET], tmp_path, progress=False)
    with pytest.raises(ConfigMismatchError) as ei:
        run_features(corpus, [SET], tmp_path, overrides={SET: {"hop_s": 0.02}}, progress=False)
    msg = str(ei.value)
    assert "config.hop_s: cached 0.01 != requested 0.02" in msg and "--new-on-mismatch" in msg
    assert "config.dtype" not in msg
    files = run_features(
        corpus, [SET], tmp_path, overrides={SET: {"hop_s": 0.02}}, on_mismatch="new", progress=False
    )
    alt = files[SET]
    assert alt.name.startswith(f"{SET}-") and alt.name.endswith(".h5") and alt.exists()
    with FeatureFile(alt) as ff:
        assert ff.provenance["config"]["hop_s"] == 0.02 and ff.provenance["rate_hz"] == 50.0
        assert alt.stem == f"{SET}-{ff.provenance['config_hash']}"
    assert_same_file(tmp_path / f"{SET}.h5", reference)  # the original is untouched


def test_compressed_storage_on_request(corpus, reference, tmp_path) -> None:
    import h5py

    path = run_features(corpus, [SET], tmp_path, progress=False, compression="gzip")[SET]
    with h5py.File(path) as f:
        assert f["values"].compression == "gzip" and f["values"].chunks is not None
    assert_same_file(path, reference)


def test_streaming_feature_set_gets_all_clips_at_once(
    corpus, reference, tmp_path, monkeypatch, extract_calls
) -> None:
    """``streams_clips`` sets get one call; a raise mid-stream is retried in batches, then alone."""
    from avemo.extract.registry import FEATURE_SETS

    cls = FEATURE_SETS.get(SET)
    calls = extract_calls(cls)
    monkeypatch.setattr(cls, "streams_clips", True, raising=False)
    path = run_features(corpus, [SET], tmp_path, batch_clips=4, progress=False)[SET]
    # one call for all 24; it raised at c007, so the 17 clips left were retried in batches of
    # 4, and a batch that raised (the ones holding c007, c019) one clip at a time
    assert calls[0] == N and max(calls[1:]) == 4 and 1 in calls[1:]
    assert plugin.CALLS.count("c000") == 1 and plugin.CALLS.count("c012") == 1  # no redo
    assert plugin.CALLS.count("c007") == 3  # stream, its retry batch, alone
    assert max(plugin.CALLS.count(c) for c in set(plugin.CALLS)) <= 3
    assert_same_file(path, reference)
