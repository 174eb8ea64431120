"""Plain time/valence/arousal annotation files, whatever their separator."""

from __future__ import annotations

import numpy as np
import pytest

from avemo.data.annotations import AnnotationError, read_annotation


@pytest.mark.parametrize("sep", [",", ";", "\t"])
def test_plain_annotation_any_separator(tmp_path, sep):
    p = tmp_path / "clip.csv"
    p.write_text(
        sep.join(["time", "valence", "arousal"])
        + "\n"
        + "\n".join(sep.join(r) for r in [("0.0", "0.5", "-0.25"), ("0.04", "", "0.1")])
        + "\n"
    )
    df = read_annotation(p)
    assert df["time"].tolist() == [0.0, 0.04]
    assert df["valence"].iloc[0] == 0.5 and np.isnan(df["valence"].iloc[1])
    assert df["arousal"].tolist() == [-0.25, 0.1]


def test_plain_annotation_without_the_columns_is_refused(tmp_path):
    p = tmp_path / "clip.csv"
    p.write_text("a;b\n1;2\n")
    with pytest.raises(AnnotationError, match="unknown annotation format"):
        read_annotation(p)
