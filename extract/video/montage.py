"""A picture of what stage one saw: a clip's aligned face crops over time, with mask and track.

``avemo inspect FILE.h5 --montage CLIP_ID -o out.png`` on a ``face_crops`` file (its rows are
the very crops the face CNNs get). Tiles are frames sampled evenly over the clip: the crop
framed in its subject track's colour, or a dark "no face" tile where the mask is 0; under each
tile its time and track. A strip at the bottom shows every frame: mask and track. The subject
statistics of ``info`` (tracks, frames with the subject, longest gap) head the picture.
Embedding files hold no pixels and the store keeps no boxes, so they cannot be drawn.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from avemo.data.store import ClipFeatures, FeatureFile
from avemo.errors import UsageError

# track colours (RGB), cycled by track id
PALETTE = np.array(
    [
        (230, 159, 0),
        (86, 180, 233),
        (0, 158, 115),
        (240, 228, 66),
        (0, 114, 178),
        (213, 94, 0),
        (204, 121, 167),
        (120, 200, 80),
    ],
    np.uint8,
)
NO_FACE = np.array((40, 40, 40), np.uint8)
WHITE = (255, 255, 255)


def frame_tracks(clip: ClipFeatures) -> np.ndarray:
    """Subject track id per frame (-1: none / unknown) from ``info['track_runs']``."""
    out = np.full(len(clip.mask), -1, np.int64)
    for t, a, b in clip.info.get("track_runs", []):
        out[int(a) : int(b)] = int(t)
    out[~np.asarray(clip.mask, bool)] = -1
    return out


def _text(img: np.ndarray, s: str, x: int, y: int, scale: float = 0.4) -> None:
    cv2.putText(img, s, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, WHITE, 1, cv2.LINE_AA)


def render(clip: ClipFeatures, columns: int = 8, max_tiles: int = 32, tile: int = 96) -> np.ndarray:
    """The montage as an RGB uint8 image."""
    n = len(clip.mask)
    if n == 0:
        raise UsageError(
            f"clip {clip.clip_id!r} has no frames (status {clip.status}: {clip.message})"
        )
    picks = np.unique(np.linspace(0, n - 1, min(max_tiles, n)).round().astype(int))
    tracks = frame_tracks(clip)
    cols = min(columns, len(picks))
    rows = -(-len(picks) // cols)
    cell_h, pad, head, strip = tile + 18, 4, 46, 22
    width = cols * (tile + pad) + pad
    img = np.full((head + rows * cell_h + strip + 26, width, 3), 18, np.uint8)
    info = clip.info
    _text(
        img,
        f"{clip.clip_id}  status {clip.status}  {n} frames  "
        f"{float(clip.timestamps[0]):.2f}-{float(clip.timestamps[-1]):.2f} s",
        pad,
        16,
        0.45,
    )
    if "subject_frames" in info:
        _text(
            img,
            f"subject: {info['subject_frames']}/{info['frames']} frames, {info['subject_tracks']} of "
            f"{info['tracks']} tracks, longest gap {info['longest_gap_s']:.2f} s, cuts {info.get('cuts', 0)}",
            pad,
            36,
        )
    for k, f in enumerate(picks):
        r, c = divmod(k, cols)
        y, x = head + r * cell_h, pad + c * (tile + pad)
        if clip.mask[f]:
            crop = cv2.resize(
                np.asarray(clip.values[f], np.uint8),
                (tile - 6, tile - 6),
                interpolation=cv2.INTER_AREA,
            )
            colour = (
                PALETTE[tracks[f] % len(PALETTE)] if tracks[f] >= 0 else np.array(WHITE, np.uint8)
            )
            img[y : y + tile, x : x + tile] = colour
            img[y + 3 : y + tile - 3, x + 3 : x + tile - 3] = crop
        else:
            img[y : y + tile, x : x + tile] = NO_FACE
            cv2.line(img, (x, y), (x + tile - 1, y + tile - 1), (90, 90, 90), 1)
            _text(img, "no subject", x + 12, y + tile // 2 + 4)
        label = f"{float(clip.timestamps[f]):.2f}s" + (f" t{tracks[f]}" if tracks[f] >= 0 else "")
        _text(img, label, x + 2, y + tile + 13, 0.38)
    # every frame: its subject track's colour, dark where the mask is 0
    y0 = head + rows * cell_h + 4
    xs = np.linspace(pad, width - pad, n + 1).round().astype(int)
    for f in range(n):
        colour = (
            PALETTE[tracks[f] % len(PALETTE)]
            if tracks[f] >= 0
            else (np.array(WHITE, np.uint8) if clip.mask[f] else NO_FACE)
        )
        img[y0 : y0 + strip, xs[f] : max(xs[f + 1], xs[f] + 1)] = colour
    _text(img, "mask / track per frame (dark: no subject face)", pad, y0 + strip + 16, 0.38)
    return img


def write_montage(
    path: str | os.PathLike[str], clip_id: str, out: str | os.PathLike[str], **kw: int
) -> Path:
    """Draw clip ``clip_id`` of feature file ``path`` into the PNG ``out``."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise UsageError(f"-o {out}: the montage is written as PNG; name the file *.png")
    if not out.parent.exists():
        raise UsageError(f"-o {out}: folder {out.parent} does not exist")
    with FeatureFile(path) as ff:
        if clip_id not in ff:
            some = ", ".join(ff.clip_ids[:5]) + (" ..." if len(ff) > 5 else "")
            raise UsageError(
                f"--montage {clip_id}: no such clip in {path} ({len(ff)} clips: {some})"
            )
        shape = ff.row_shape
        if len(shape) != 3 or shape[2] != 3 or ff.dtype != np.uint8:
            raise UsageError(
                f"--montage needs aligned crops, but {path} holds {ff.provenance.get('feature_set')} rows of shape "
                f"{list(shape)}: extract the face_crops feature set for these clips (avemo features -s "
                f"face_crops ...) and inspect that file"
            )
        clip = ff.clip(clip_id)
    img = render(clip, **kw)
    if not cv2.imwrite(str(out), cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
        raise UsageError(f"-o {out}: could not write the PNG there")
    return out
