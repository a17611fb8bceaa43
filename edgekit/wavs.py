"""The ``wav:DIR`` data source: folders of ``.wav`` recordings, one sub-folder per class.

Read with Python's :mod:`wave` (integer PCM: 8-bit unsigned, 16/24/32-bit signed; any number of
channels), scaled to float32 in [-1, 1), one sample of shape (frames, channels) per file. Every
file must have the sample rate of the first; clips shorter than the longest are padded at the end
with silence (zeros), as keyword-spotting corpora pad their 1 s clips, and the count is logged;
clips longer than ``MAX_WAV_SECONDS`` are refused. Class ids are the sorted folder names; hidden
entries and files not ending in ``.wav`` are skipped with a warning. Sizes come from each file's
header before its frames are read (:data:`edgekit.data.MAX_ARRAY_BYTES` caps the whole set).
"""

from __future__ import annotations

import logging
import os
import wave
from pathlib import Path

import numpy as np

from .errors import DataError, one_line

log = logging.getLogger(__name__)

MAX_WAV_SECONDS = float(os.environ.get("EDGEKIT_MAX_WAV_SECONDS", 60.0))
"""Longest clip a ``wav:`` folder may hold (seconds; ``EDGEKIT_MAX_WAV_SECONDS``): edgekit
classifies clips, and one long recording would pad every other clip to its length."""


def _pcm(raw: bytes, width: int, channels: int) -> np.ndarray:
    """Interleaved little-endian PCM frames -> float32 (frames, channels) in [-1, 1)."""
    if width == 1:
        a = (np.frombuffer(raw, dtype=np.uint8).astype("float32") - 128.0) / 128.0
    elif width == 2:
        a = np.frombuffer(raw, dtype="<i2").astype("float32") / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        a = v.astype("float32") / float(1 << 23)
    else:
        a = (np.frombuffer(raw, dtype="<i4").astype("float64") / float(1 << 31)).astype("float32")
    return a.reshape(-1, channels)


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """One file: float32 (frames, channels) and its sample rate; a :class:`DataError` naming the
    file for anything :mod:`wave` cannot read (float or compressed WAV, a truncated file)."""
    try:
        with wave.open(str(path), "rb") as w:
            rate, width, channels, frames = w.getframerate(), w.getsampwidth(), w.getnchannels(), w.getnframes()
            if width not in (1, 2, 3, 4):
                raise DataError(f"{path}: {8 * width}-bit samples; integer PCM of 8, 16, 24 or 32 bits is read")
            if rate <= 0 or frames / rate > MAX_WAV_SECONDS:
                raise DataError(f"{path}: {frames} frames at {rate} Hz is longer than {MAX_WAV_SECONDS:g} s "
                                "(EDGEKIT_MAX_WAV_SECONDS); cut it into clips")
            raw = w.readframes(frames)
    except DataError:
        raise
    except (wave.Error, EOFError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable PCM .wav file ({one_line(exc)}); convert it to integer PCM, "
                        "e.g. sox IN -e signed-integer -b 16 OUT.wav") from None
    if len(raw) != frames * width * channels:
        raise DataError(f"{path}: truncated: the header promises {frames} frames, the file holds "
                        f"{len(raw) // max(width * channels, 1)}")
    return _pcm(raw, width, channels), rate


def read_folder(folder: Path, max_bytes: int) -> tuple[np.ndarray, np.ndarray, list[str], int]:
    """``x`` float32 (clips, frames, channels), ``y`` int64, the class names, the sample rate."""
    if not folder.is_dir():
        raise DataError(f"{folder}: wav folder not found")
    entries = sorted(folder.iterdir())
    classes = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
    skipped = [p.name for p in entries if p not in classes]
    if len(classes) < 2:
        raise DataError(f"{folder}: expected one sub-folder of .wav files per class, found {len(classes)}")
    clips, ys, rate, channels, total = [], [], None, None, 0
    for cid, cdir in enumerate(classes):
        files = []
        for p in sorted(cdir.iterdir()):
            if p.name.startswith(".") or not p.is_file() or p.suffix.lower() != ".wav":
                skipped.append(f"{cdir.name}/{p.name}")
            else:
                files.append(p)
        if not files:
            raise DataError(f"{cdir}: class {cdir.name!r} has no .wav files")
        for p in files:
            x, r = read_wav(p)
            if rate is None:
                rate, channels = r, x.shape[1]
            elif r != rate:
                raise DataError(f"{p}: sample rate {r} Hz, the others are {rate} Hz; resample it "
                                f"(e.g. sox IN -r {rate} OUT.wav)")
            elif x.shape[1] != channels:
                raise DataError(f"{p}: {x.shape[1]} channel(s), the others have {channels}")
            total += x.size * 4
            if total > max_bytes:
                raise DataError(f"{folder}: the clips add up to more than {max_bytes} bytes as float32 "
                                f"(EDGEKIT_MAX_ARRAY_BYTES; at {cdir.name}/{p.name}); use fewer or shorter clips")
            clips.append(x)
            ys.append(cid)
    if skipped:
        shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        log.warning("%s: skipped %d hidden or non-.wav entries (%s)", folder, len(skipped), shown)
    longest = max(len(c) for c in clips)
    if longest == 0:
        raise DataError(f"{folder}: every .wav file is empty")
    short = sum(len(c) < longest for c in clips)
    if short:
        log.warning("%s: padded %d of %d clips at the end with silence to the longest, %d frames (%.3f s)",
                    folder, short, len(clips), longest, longest / rate)
    x = np.zeros((len(clips), longest, channels), dtype="float32")
    for i, c in enumerate(clips):
        x[i, :len(c)] = c
    log.info("%s: %d clips, %d classes, %d Hz, %d channel(s), %d frames", folder, len(clips), len(classes), rate,
             channels, longest)
    return x, np.asarray(ys, dtype="int64"), [c.name for c in classes], rate
