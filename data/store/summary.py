"""The summary of a feature file that ``avemo inspect`` prints."""

from __future__ import annotations

import json
import os

from avemo.data.store.reader import FeatureFile


def describe(path: str | os.PathLike[str]) -> str:
    """What ``avemo inspect`` prints: provenance, shapes, per-status clip counts."""
    with FeatureFile(path) as ff:
        p = ff.provenance
        vals = ff._f["values"]
        layout = (
            "contiguous" if vals.chunks is None else f"chunked {vals.compression or ''}".strip()
        )
        lines = [
            f"file         {ff.path}  ({ff.path.stat().st_size / 1e6:.1f} MB, {layout})",
            f"feature set  {p.get('feature_set')}",
            f"config hash  {p.get('config_hash')}",
            f"created      {p.get('created')}",
            f"clips        {len(ff)}",
            f"rows         {ff.n_rows}   row shape {list(ff.row_shape)}   dtype {ff.dtype}",
            f"rate (Hz)    {p.get('rate_hz')}",
        ]
        if ff.logit_classes:
            n = len(ff.logit_classes)
            lines.append(
                f"logits       last {n} columns, classes in order: {', '.join(ff.logit_classes)}"
            )
        lines.append(
            "status       " + ", ".join(f"{k}={v}" for k, v in sorted(ff.status_counts().items()))
        )
        if ff.n_rows:
            lines.append(f"valid rows   {int(ff._f['mask'][()].sum())} / {ff.n_rows}")
        subj = [json.loads(i) for i in ff.info]
        subj = [d for d in subj if "subject_frames" in d]
        if subj:
            frames = sum(d["frames"] for d in subj)
            lines.append(
                f"subject      {sum(d['subject_frames'] for d in subj)} / {frames} frames; tracks per clip "
                f"max {max(d['tracks'] for d in subj)}; longest gap max "
                f"{max(d['longest_gap_s'] for d in subj):.2f} s (per clip: --montage CLIP -o PNG)"
            )
        lines.append("config       " + json.dumps(p.get("config"), sort_keys=True))
        lines.append("weights      " + json.dumps(p.get("weights"), sort_keys=True))
        lines.append("versions     " + json.dumps(p.get("versions"), sort_keys=True))
        bad = [
            (c, s, m)
            for c, s, m in zip(ff.clip_ids, ff.status, ff.message, strict=True)
            if s != "ok"
        ]
        for c, s, m in bad[:10]:
            lines.append(f"  {s:<9} {c}: {m}")
        if len(bad) > 10:
            lines.append(f"  ... and {len(bad) - 10} more non-ok clips")
        return "\n".join(lines)
