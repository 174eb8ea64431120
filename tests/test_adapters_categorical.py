"""Categorical adapters on small fake trees that use each dataset's real naming."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from _tutorial import tutorial_block

from avemo.data.adapters import DATASETS, build_manifest, load_all
from avemo.data.manifest import ManifestError, load_manifest, save_manifest


def touch(root: Path, *rels: str) -> None:
    for rel in rels:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")


def test_registry_lists_every_adapter():
    load_all()
    assert set(DATASETS.names()) >= {
        "csv",
        "folder",
        "ravdess",
        "cremad",
        "afew",
        "emodb",
        "affwild2",
        "recola",
        "demo",
    }


load_all()


@pytest.mark.parametrize("name", DATASETS.names())  # every registered adapter, built-in or plugin
def test_empty_or_wrong_root_is_a_clear_error(tmp_path, name):
    with pytest.raises(ManifestError, match=f"{name}: .* does not exist"):
        build_manifest(name, tmp_path / "nope")
    touch(tmp_path, "README.txt", "misc/notes.md")
    with pytest.raises(ManifestError, match=f"^{name}: ") as e:  # one message, adapter named
        build_manifest(name, tmp_path)
    assert "found no clips" in str(e.value) or name in ("csv", "demo")  # these read one table


@pytest.mark.parametrize("name", DATASETS.names())
def test_an_option_the_adapter_does_not_take_is_one_clear_error(tmp_path, name):
    """``--option KEY=VALUE`` with a key that is not a named constructor argument: a UsageError
    (exit 2) naming the key and the adapter's options, before the root is read."""
    import inspect

    from avemo.errors import UsageError

    params = inspect.signature(DATASETS.get(name)).parameters
    options = [p for p in params if p not in ("self", "args", "kwargs")]
    with pytest.raises(UsageError, match=f"the {name} adapter has no option 'no_such_option'") as e:
        build_manifest(name, tmp_path / "not-read", no_such_option="1")
    assert all(o in str(e.value) for o in options)
    if "folds" in options:  # a near miss is named
        with pytest.raises(UsageError, match="did you mean folds"):
            build_manifest(name, tmp_path, fold="3")


# --- RAVDESS ---------------------------------------------------------------------------------


def _ravdess_tree(root: Path) -> None:
    files = []
    for actor in range(1, 13):
        for emo in (1, 3, 5):
            code = f"01-{emo:02d}-01-01-01-{actor:02d}"
            files.append(f"Video_Speech_Actor_{actor:02d}/Actor_{actor:02d}/01-{code}.mp4")
            files.append(f"Video_Speech_Actor_{actor:02d}/Actor_{actor:02d}/02-{code}.mp4")
            files.append(f"Audio_Speech_Actors_01-24/Actor_{actor:02d}/03-{code}.wav")
    # song (VC=02) and a stray file: not speech clips
    files += ["Video_Song_Actor_01/Actor_01/01-02-03-01-01-01-01.mp4", "Actor_01/notes.txt"]
    # actor 13: video-only download (02 + 03) and one recording with a full-AV file only
    files += [
        "Actor_13/02-01-04-02-01-01-13.mp4",
        "Actor_13/03-01-04-02-01-01-13.wav",
        "Actor_13/01-01-08-02-02-02-13.mp4",
    ]
    touch(root, *files)


def test_ravdess(tmp_path):
    _ravdess_tree(tmp_path)
    df = build_manifest("ravdess", tmp_path)
    assert len(df) == 12 * 3 + 2
    assert df["clip_id"].is_unique
    row = df.set_index("clip_id").loc["01-05-01-01-01-07"]
    assert row["label"] == "angry" and row["subject"] == "Actor_07" and row["split"] == "train"
    assert Path(row["video"]).name == "01-01-05-01-01-01-07.mp4"  # full AV preferred over 02
    assert Path(row["audio"]).name == "03-01-05-01-01-01-07.wav"
    vid_only = df.set_index("clip_id").loc["01-04-02-01-01-13"]
    assert Path(vid_only["video"]).name.startswith("02-") and vid_only["label"] == "sad"
    av_only = df.set_index("clip_id").loc["01-08-02-02-02-13"]
    assert av_only["audio"] == av_only["video"] and av_only["label"] == "surprised"
    # actor k-fold: one fold per actor block, never an actor in two folds
    assert df.groupby("subject")["fold"].nunique().max() == 1
    assert df["fold"].nunique() == 6
    assert not df["clip_id"].str.startswith("02-").any()  # no song
    song = build_manifest("ravdess", tmp_path, channel="all")
    assert len(song) == len(df) + 1


def test_ravdess_clip_ids_are_stable(tmp_path):
    _ravdess_tree(tmp_path)
    a = build_manifest("ravdess", tmp_path)
    (tmp_path / "Actor_99").mkdir()
    touch(tmp_path, "Actor_99/01-01-02-01-01-01-99.mp4")
    b = build_manifest("ravdess", tmp_path)
    assert set(a["clip_id"]) < set(b["clip_id"])
    pd.testing.assert_series_equal(
        a["label"], b.set_index("clip_id").loc[a["clip_id"], "label"].reset_index(drop=True)
    )


# --- CREMA-D ---------------------------------------------------------------------------------


def test_cremad(tmp_path):
    emos = ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"]
    files = []
    for actor in range(1001, 1011):
        for i, e in enumerate(emos):
            lvl = ["LO", "MD", "HI", "XX"][i % 4]
            files += [
                f"VideoFlash/{actor}_IEO_{e}_{lvl}.flv",
                f"AudioWAV/{actor}_IEO_{e}_{lvl}.wav",
            ]
    files += ["AudioWAV/1011_DFA_NEU_XX.wav", "AudioWAV/readme.wav", "VideoDemographics.csv"]
    touch(tmp_path, *files)
    df = build_manifest("cremad", tmp_path)
    assert len(df) == 61
    assert sorted(df["label"].unique()) == ["angry", "disgust", "fear", "happy", "neutral", "sad"]
    r = df.set_index("clip_id").loc["1004_IEO_HAP_XX"]
    assert r["subject"] == "1004" and r["label"] == "happy" and r["intensity"] == "XX"
    assert r["video"].endswith(".flv") and r["audio"].endswith(".wav")
    assert pd.isna(df.set_index("clip_id").loc["1011_DFA_NEU_XX", "video"])
    # speaker independent: every actor in exactly one split, all three splits used
    assert df.groupby("subject")["split"].nunique().max() == 1
    assert set(df["split"]) == {"train", "val", "test"}
    assert df.groupby("split")["subject"].nunique().to_dict() == {"test": 2, "train": 8, "val": 1}


# --- AFEW ------------------------------------------------------------------------------------


def test_afew(tmp_path):
    emos = ["Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"]
    files = [f"Train_AFEW/{e}/0000{i}{j}.avi" for i, e in enumerate(emos) for j in range(3)]
    files += [f"Val_AFEW/{e}/0100{i}.avi" for i, e in enumerate(emos)]
    files += ["Test_AFEW/999.avi"]
    touch(tmp_path, *files)
    df = build_manifest("afew", tmp_path)
    assert len(df) == 28
    assert df["split"].value_counts().to_dict() == {"train": 21, "val": 7}
    assert sorted(df["label"].unique()) == [e.lower() for e in emos]
    assert df.set_index("clip_id").loc["val/01004", "label"] == "neutral"
    with_test = build_manifest("afew", tmp_path, include_test="true")
    assert len(with_test) == 29 and with_test.set_index("clip_id")["label"].isna().sum() == 1
    touch(tmp_path, "Train_AFEW/Contempt/1.avi")
    with pytest.raises(ManifestError, match="Contempt"):
        build_manifest("afew", tmp_path)


def test_afew_plain_folder_names(tmp_path):
    touch(tmp_path, "Train/Happy/1.avi", "Val/Sad/2.avi")
    df = build_manifest("afew", tmp_path)
    assert df[["clip_id", "split", "label"]].values.tolist() == [
        ["train/1", "train", "happy"],
        ["val/2", "val", "sad"],
    ]


# --- EmoDB -----------------------------------------------------------------------------------


def test_emodb_fake_tree(tmp_path):
    touch(
        tmp_path,
        "wav/03a01Fa.wav",
        "wav/03a01Wa.wav",
        "wav/10b09Lb.wav",
        "wav/16a05Tc.wav",
        "wav/11a02Ea.wav",
        "wav/12b01Ab.wav",
        "wav/13a04Nd.wav",
        "silb/03a01Fa.silb",
        "wav/other.wav",
    )
    df = build_manifest("emodb", tmp_path, folds=3)
    assert df["clip_id"].tolist() == [
        "03a01Fa",
        "03a01Wa",
        "10b09Lb",
        "11a02Ea",
        "12b01Ab",
        "13a04Nd",
        "16a05Tc",
    ]
    assert df["label"].tolist() == [
        "happiness",
        "anger",
        "boredom",
        "disgust",
        "fear",
        "neutral",
        "sadness",
    ]
    assert df["subject"].tolist() == ["03", "03", "10", "11", "12", "13", "16"]
    assert df.groupby("subject")["fold"].nunique().max() == 1 and df["fold"].nunique() == 3
    assert "video" not in df.columns


def test_emodb_shared_copy(shared_data):
    root = shared_data / "emodb-8spk"
    df = build_manifest("emodb", root)
    ref = pd.read_csv(root / "labels.csv", dtype=str)
    assert len(df) == 411 and df["subject"].nunique() == 8
    assert df["label"].value_counts().to_dict() == {
        "anger": 100,
        "boredom": 65,
        "neutral": 63,
        "happiness": 55,
        "fear": 47,
        "sadness": 45,
        "disgust": 36,
    }
    merged = df.merge(ref, on="clip_id")
    assert len(merged) == 411
    assert (merged["label"] == merged["emotion"]).all() and (
        merged["subject"] == merged["speaker"]
    ).all()
    assert df.groupby("subject")["fold"].nunique().max() == 1


# --- folder-per-class and csv ----------------------------------------------------------------


def test_folder_with_and_without_splits(tmp_path):
    a = tmp_path / "flat"
    touch(a, "happy/s1_x.mp4", "happy/s1_x.wav", "sad/s2_y.mp4", "sad/s2_z.wav", "readme.txt")
    df = build_manifest("folder", a, subject_regex=r"^(s\d+)_")
    assert df["clip_id"].tolist() == ["happy/s1_x", "sad/s2_y", "sad/s2_z"]
    assert df["split"].eq("train").all() and df["subject"].tolist() == ["s1", "s2", "s2"]
    r = df.set_index("clip_id").loc["happy/s1_x"]
    assert r["video"].endswith("s1_x.mp4") and r["audio"].endswith("s1_x.wav")
    b = tmp_path / "split"
    touch(b, "train/happy/1.mp4", "Validation/happy/2.mp4", "test/sad/3.avi")
    df = build_manifest("folder", b)
    assert df[["split", "label"]].values.tolist() == [
        ["val", "happy"],
        ["test", "sad"],
        ["train", "happy"],
    ]
    with pytest.raises(ManifestError, match="outside"):
        build_manifest("folder", b, classes="happy")


def test_csv_adapter_renames_and_resolves(tmp_path):
    touch(tmp_path, "media/a.mp4", "media/b.mp4")
    table = tmp_path / "my.csv"
    table.write_text(
        "id,path,emotion,speaker,part\nA,media/a.mp4,joy,x,train\nB,media/b.mp4,anger,y,test\n"
    )
    df = build_manifest(
        "csv", table, rename="id:clip_id,path:video,emotion:label,speaker:subject,part:split"
    )
    assert df["clip_id"].tolist() == ["A", "B"]
    assert Path(df["video"].iloc[0]) == (tmp_path / "media/a.mp4").resolve()
    with pytest.raises(ManifestError, match="outside"):
        build_manifest(
            "csv",
            table,
            rename="id:clip_id,path:video,emotion:label,speaker:subject,part:split",
            classes="joy",
        )
    with pytest.raises(ManifestError, match="lacks column"):
        build_manifest("csv", table)
    with pytest.raises(ManifestError, match="lacks"):
        build_manifest("csv", table, rename="nosuch:clip_id")


def test_manifest_round_trip_through_csv(tmp_path):
    _ravdess_tree(tmp_path / "r")
    df = build_manifest("ravdess", tmp_path / "r")
    out = save_manifest(df, tmp_path / "m.csv")
    back = load_manifest(out, classes=DATASETS.get("ravdess").classes)
    assert back["clip_id"].tolist() == df["clip_id"].tolist()
    assert back["fold"].tolist() == df["fold"].tolist()


def test_symlinked_folders_are_followed_once(tmp_path):
    data = tmp_path / "store"
    touch(data, "wav/03a01Fa.wav", "wav/08b02Wb.wav")
    root = tmp_path / "emodb"
    root.mkdir()
    (root / "wav").symlink_to(data / "wav", target_is_directory=True)
    (data / "wav" / "loop").symlink_to(root, target_is_directory=True)  # a cycle back to the root
    df = build_manifest("emodb", root)
    assert df["clip_id"].tolist() == ["03a01Fa", "08b02Wb"]


def test_the_docs_table_is_rendered_from_every_adapters_own_protocol():
    """docs/adapters.md says, per adapter, what a subject, a split and a fold are: rendered at
    build time from each adapter's ``protocol`` (one file per adapter), one row per registered
    adapter, its options the constructor's own keyword names."""
    import inspect
    import re
    from pathlib import Path

    from avemo.data.adapters import DATASETS, load_all
    from avemo.data.adapters.protocol import EvalProtocol, protocol_table

    load_all()
    doc = (Path(__file__).resolve().parents[1] / "docs" / "adapters.md").read_text()
    hooks = (Path(__file__).resolve().parents[1] / "docs" / "hooks.py").read_text()
    marker = re.search(r'MARKER = "(.*)"', hooks).group(1)
    assert doc.count(marker) == 1, "docs/adapters.md lost the marker the docs hook renders"
    table = protocol_table()
    rows = re.findall(r"^\| `([a-z0-9_]+)` \| (.*) \|$", table, re.M)
    assert [r[0] for r in rows] == sorted(DATASETS.names())
    for name, rest in rows:
        cls = DATASETS.get(name)
        assert isinstance(cls.protocol, EvalProtocol)
        assert all(getattr(cls.protocol, f).strip() for f in ("subject", "split", "fold")), name
        sig = inspect.signature(cls).parameters
        listed = re.findall(r"`([a-z_]+)`", rest.rsplit(" | ", 1)[-1])
        assert listed == [k for k, v in sig.items() if v.kind is not v.VAR_KEYWORD], name


def test_an_adapter_without_a_protocol_is_named(monkeypatch):
    from avemo.data.adapters import DATASETS
    from avemo.data.adapters.protocol import protocol_of

    class _Probe:
        """A plugin that forgot its protocol."""

    monkeypatch.setitem(DATASETS._items, "_no_protocol_probe", _Probe)
    with pytest.raises(TypeError, match="_no_protocol_probe.*declares no `protocol"):
        protocol_of("_no_protocol_probe")


def test_the_tutorials_adapter_is_one_file(tmp_path):
    """docs/tutorials/extending.md's `lab` adapter, loaded as a plugin file with no other edit,
    is a registered adapter with its row in the rendered table."""
    import os
    import subprocess
    import sys

    block = tutorial_block('register("lab")')
    (tmp_path / "lab_adapter.py").write_text(block)
    env = {**os.environ, "AVEMO_PLUGINS": "lab_adapter", "PYTHONPATH": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "avemo.data.adapters.protocol"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    row = next(line for line in out.splitlines() if line.startswith("| `lab` |"))
    assert "the speaker folder" in row and row.endswith("| `split` |")
