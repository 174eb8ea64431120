"""Generic CSV adapter: any dataset described by a table with (or renamed to) manifest columns.

Options: ``rename="path:video,emotion:label"`` maps the table's own column names onto the
manifest's; ``classes="a,b,c"`` declares the label set (default: the labels found);
``base=DIR`` resolves relative media paths (default: the CSV's folder); ``split=NAME`` and
``subject=NAME`` fill those columns when the table has none.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from avemo.data.adapters import DATASETS
from avemo.data.adapters._common import as_list, frame
from avemo.data.adapters.protocol import EvalProtocol
from avemo.data.manifest import ManifestError

_PATH_COLUMNS = ("video", "audio", "annotation")


def _parse_rename(rename: Any) -> dict[str, str]:
    if rename is None:
        return {}
    if isinstance(rename, dict):
        return {str(k): str(v) for k, v in rename.items()}
    out = {}
    for item in str(rename).split(","):
        if not item.strip():
            continue
        old, sep, new = item.partition(":")
        if not sep or not old.strip() or not new.strip():
            raise ManifestError(f"csv: rename item {item!r} is not OLD:NEW")
        out[old.strip()] = new.strip()
    return out


@DATASETS.register("csv")
class CsvAdapter:
    """Generic table with manifest columns (rename=OLD:NEW,... for other column names)."""

    protocol = EvalProtocol(
        subject="the table's `subject` column (or `subject=NAME`)",
        split="the table's `split` column (or `split=NAME`)",
        fold="the table's `fold` column, if it has one",
    )

    def __init__(
        self,
        rename: str | dict[str, str] | None = None,
        classes: str | list[str] | None = None,
        base: str | None = None,
        split: str | None = None,
        subject: str | None = None,
        sep: str | None = None,
    ) -> None:
        self.rename = _parse_rename(rename)
        self.classes = as_list(classes)
        self.base = base
        self.default_split = split
        self.default_subject = subject
        self.sep = sep

    def scan(self, root: str | os.PathLike[str]) -> pd.DataFrame:
        path = Path(root).expanduser()
        if path.is_dir():
            raise ManifestError(f"csv: {path} is a folder; give the CSV file itself as ROOT")
        if not path.exists():
            raise ManifestError(f"csv: table {path} does not exist")
        try:
            df = pd.read_csv(
                path, dtype=str, sep=self.sep, engine="python" if self.sep is None else "c"
            )
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise ManifestError(f"csv: cannot read {path} as a table: {e}") from None
        if df.empty:
            raise ManifestError(f"csv: table {path} has no rows")
        missing = [old for old in self.rename if old not in df.columns]
        if missing:
            raise ManifestError(
                f"csv: rename names column(s) {missing} that {path} lacks; it has {list(df.columns)}"
            )
        df = df.rename(columns=self.rename)
        if "split" not in df.columns and self.default_split:
            df["split"] = self.default_split
        if "subject" not in df.columns and self.default_subject:
            df["subject"] = self.default_subject
        base = Path(self.base).expanduser() if self.base else path.parent
        for c in _PATH_COLUMNS:
            if c in df.columns:
                df[c] = df[c].map(
                    lambda p: p if pd.isna(p) or os.path.isabs(p) else str((base / p).resolve())
                )
        if "fold" in df.columns:
            df["fold"] = pd.to_numeric(df["fold"], errors="coerce")
        if self.classes is None and "label" in df.columns:
            self.classes = sorted(df["label"].dropna().unique().tolist())
        return frame(df.to_dict("records"))
