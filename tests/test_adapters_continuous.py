"""Continuous (valence/arousal) adapters and the annotation reader, on fake trees."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from avemo.data.adapters import build_manifest
from avemo.data.annotations import AnnotationError, read_annotation, video_fps
from avemo.data.manifest import ManifestError


def tiny_video(path: Path, fps: int = 30, frames: int = 6) -> Path:
    """A real, decodable few-frame MPEG-4 video (the adapter reads its frame rate)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        for i in range(frames):
            img = np.full((32, 32, 3), i * 20, np.uint8)
            c.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        c.mux(s.encode())
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


VA = "valence,arousal\n0.1,0.2\n-5,-5\n0.3,-0.4\n-0.5,0.6\n"


# --- Aff-Wild2 -------------------------------------------------------------------------------


@pytest.fixture()
def affwild2_tree(tmp_path):
    root = tmp_path / "affwild2"
    tiny_video(root / "videos/batch1/1-30-1280x720.mp4", fps=30)
    tiny_video(root / "videos/batch2/video10_1.avi", fps=25)
    tiny_video(root / "videos/new_vids/118-30-640x480.mp4", fps=30)
    va = root / "annotations/VA_Estimation_Challenge"
    write(va / "Train_Set/1-30-1280x720.txt", VA)
    write(va / "Train_Set/video10_1_left.txt", VA)
    write(va / "Train_Set/video10_1_right.txt", VA)
    write(va / "Validation_Set/118-30-640x480.txt", VA)
    # the expression set beside it uses the same folder names: not V/A, must be ignored
    write(
        root / "annotations/EXPR_Classification_Challenge/Train_Set/1-30-1280x720.txt",
        "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n0\n",
    )
    return root


def test_affwild2_manifest(affwild2_tree):
    df = build_manifest("affwild2", affwild2_tree)
    assert df["clip_id"].tolist() == [
        "1-30-1280x720",
        "118-30-640x480",
        "video10_1_left",
        "video10_1_right",
    ]
    by = df.set_index("clip_id")
    assert by.loc["video10_1_left", "video"] == by.loc["video10_1_right", "video"]
    assert by.loc["video10_1_left", "video"].endswith("video10_1.avi")
    assert (
        by.loc["118-30-640x480", "split"] == "val" and by.loc["1-30-1280x720", "split"] == "train"
    )
    assert by["annotation"].str.contains("VA_Estimation_Challenge").all()
    assert "label" not in df.columns
    folds = build_manifest("affwild2", affwild2_tree, folds=2)
    assert folds.groupby("video_name")["fold"].nunique().max() == 1


def test_affwild2_missing_video(affwild2_tree):
    write(affwild2_tree / "annotations/VA_Estimation_Challenge/Train_Set/gone.txt", VA)
    with pytest.raises(ManifestError, match="gone.txt"):
        build_manifest("affwild2", affwild2_tree)
    with pytest.warns(UserWarning, match="left out 1"):
        df = build_manifest("affwild2", affwild2_tree, skip_missing="true")
    assert "gone" not in set(df["clip_id"])


def test_affwild2_annotation_frames_to_seconds(affwild2_tree):
    df = build_manifest("affwild2", affwild2_tree).set_index("clip_id")
    r = df.loc["video10_1_left"]
    assert video_fps(r["video"]) == pytest.approx(25)
    a = read_annotation(r["annotation"], video=r["video"])
    assert list(a.columns) == ["time", "valence", "arousal"]
    np.testing.assert_allclose(a["time"], [0, 0.04, 0.08, 0.12])
    assert a["valence"].isna().tolist() == [False, True, False, False]
    np.testing.assert_allclose(a["arousal"].dropna(), [0.2, -0.4, 0.6])
    b = read_annotation(r["annotation"], fps=10)
    np.testing.assert_allclose(b["time"], [0, 0.1, 0.2, 0.3])
    with pytest.raises(AnnotationError, match="fps"):
        read_annotation(r["annotation"])


# --- RECOLA ----------------------------------------------------------------------------------


def _recola_tree(root: Path, ids: list[str]) -> None:
    for i, pid in enumerate(ids):
        write(root / f"recordings_audio/{pid}.wav", "")
        write(root / f"recordings_video/{pid}.mp4", "")
        n = 5 + i % 2
        t = np.arange(n) * 0.04
        write(
            root / f"ratings_gold_standard/arousal/{pid}.csv",
            "".join(f"{x:.2f},{0.1 * k:.3f}\n" for k, x in enumerate(t)),
        )
        write(
            root / f"ratings_gold_standard/valence/{pid}.csv",
            "".join(f"{x:.2f},{-0.1 * k:.3f}\n" for k, x in enumerate(t)),
        )
        # the individual raters, which the gold standard must win over
        write(root / f"ratings_individual/arousal/{pid}.csv", "time;FM1;FM2;\n0.00;0.1;0.3;\n")
        write(root / f"ratings_individual/valence/{pid}.csv", "time;FM1;FM2;\n0.00;0.1;0.3;\n")


RECOLA_IDS = [
    "P16",
    "P17",
    "P19",
    "P21",
    "P23",
    "P25",
    "P26",
    "P28",
    "P30",
    "P34",
    "P37",
    "P39",
    "P41",
    "P42",
    "P43",
    "P45",
    "P46",
    "P48",
    "P56",
    "P58",
    "P62",
    "P64",
    "P65",
]


def test_recola_manifest_and_split(tmp_path):
    _recola_tree(tmp_path, RECOLA_IDS)
    df = build_manifest("recola", tmp_path)
    assert len(df) == 23 and df["subject"].is_unique
    by = df.set_index("clip_id")
    assert by["annotation"].str.contains("ratings_gold_standard/arousal").all()
    assert by.loc["P16", "audio"].endswith("recordings_audio/P16.wav")
    assert df["split"].value_counts().to_dict() == {"train": 9, "val": 9, "test": 5}
    assert by.loc["P30", "split"] == "train" and by.loc["P34", "split"] == "val"
    table = write(
        tmp_path / "avec.csv", "subject,split\n" + "".join(f"{p},dev\n" for p in RECOLA_IDS)
    )
    assert set(build_manifest("recola", tmp_path, splits=str(table))["split"]) == {"val"}


def test_recola_avec_names_and_annotation(tmp_path):
    _recola_tree(tmp_path, ["train_1", "dev_1", "test_1"])
    df = build_manifest("recola", tmp_path).set_index("clip_id")
    assert df["split"].to_dict() == {"dev_1": "val", "test_1": "test", "train_1": "train"}
    a = read_annotation(df.loc["dev_1", "annotation"])  # 6 rows, time column in the file
    np.testing.assert_allclose(a["time"], np.arange(6) * 0.04)
    np.testing.assert_allclose(a["arousal"], np.arange(6) * 0.1)
    np.testing.assert_allclose(a["valence"], -np.arange(6) * 0.1)


def test_recola_raters_averaged_and_25hz_without_time(tmp_path):
    write(tmp_path / "arousal/P1.csv", "FM1;FM2;FF1\n0.1;0.2;0.3\n0.4;0.5;0.6\n0.0;;0.2\n")
    write(tmp_path / "valence/P1.csv", "0.5\n0.6\n0.7\n")
    a = read_annotation(tmp_path / "arousal/P1.csv")
    np.testing.assert_allclose(a["time"], [0, 0.04, 0.08])
    np.testing.assert_allclose(a["arousal"], [0.2, 0.5, 0.1])
    np.testing.assert_allclose(a["valence"], [0.5, 0.6, 0.7])


def test_recola_incomplete_participant(tmp_path):
    _recola_tree(tmp_path, ["P16", "P17"])
    (tmp_path / "ratings_gold_standard/valence/P17.csv").unlink()
    with pytest.raises(ManifestError, match="P17"):
        build_manifest("recola", tmp_path)


def test_generic_and_bad_annotation(tmp_path):
    g = write(tmp_path / "x.csv", "time,valence,arousal\n0.0,0.1,-5\n0.5,0.2,0.3\n")
    a = read_annotation(g)
    assert a["arousal"].isna().tolist() == [True, False] and a["time"].tolist() == [0.0, 0.5]
    with pytest.raises(AnnotationError, match="unknown annotation format"):
        read_annotation(write(tmp_path / "y.csv", "a,b\n1,2\n"))
    with pytest.raises(AnnotationError, match="does not exist"):
        read_annotation(tmp_path / "none.txt")


def test_read_clip_annotation_uses_the_rows_video_or_fps(affwild2_tree, tmp_path):
    from avemo.data.annotations import read_clip_annotation

    df = build_manifest("affwild2", affwild2_tree)
    row = df.set_index("clip_id").loc["1-30-1280x720"].to_dict()
    np.testing.assert_allclose(read_clip_annotation(row)["time"], np.arange(4) / 30)
    with_fps = build_manifest("affwild2", affwild2_tree, fps=50).iloc[0].to_dict()
    np.testing.assert_allclose(read_clip_annotation(with_fps)["time"], np.arange(4) / 50)
    with pytest.raises(AnnotationError, match="no annotation"):
        read_clip_annotation({"clip_id": "x", "annotation": float("nan")})
