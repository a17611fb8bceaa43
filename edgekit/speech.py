"""Synthetic speech for keyword spotting (``data.source: kws:espeak``), generated offline.

Every clip is one word spoken by Debian's ``espeak-ng`` in one *voice* (an accent such as
``en-gb-x-rp`` with a variant such as ``+f3``), at a rate and pitch drawn for that clip, then
cut to the spoken part, resampled to 16 kHz, brought to a drawn peak level and placed at a drawn
offset inside exactly 1 s by ``sox``; background noise (white, pink or brown, at a drawn level)
is mixed in with numpy. Classes: the keywords (``data.speech.words``), then ``_silence_`` (noise
alone) and ``_unknown_`` (a word drawn from ``data.speech.unknown_words``). Every voice speaks
every class ``repeats`` times.

Deterministic: every random choice comes from numpy Generators seeded by ``data.speech.seed``
(one per voice, keyed by the voice's name, so a voice's clips do not depend on the other
voices), sox runs with ``-R`` (repeatable) and ``-D`` (no dither), and the programs run through
:mod:`subprocess` with argument lists (no shell). The same settings and tool versions give the
same bytes.

Cached: the clips are built once into ``$EDGEKIT_CACHE/kws-<hash>/`` (default
``$XDG_CACHE_HOME/edgekit`` or ``~/.cache/edgekit``), the hash taken over the settings that shape
the clips, the generator's format version and the espeak-ng and sox versions. A build is written
in a temporary folder beside it and renamed into place, so a build that is killed leaves no half
cache; edgekit removes only its own temporary build folders. The clips are stored as 16-bit PCM
(``clips.npz``, read with ``allow_pickle=False``) and read back as float32 in [-1, 1), shape
(16000, 1): what ``wav:`` gives for the same clips.

Split by voice: ``test_voices`` (and ``val_voices``) voices, drawn with the seed, are held out,
so the test split holds voices the model never heard. A held-out voice may share its accent or its
variant with training voices, never both. These are synthetic voices: results on them are
"synthetic speech, held-out voices", not comparable with recorded corpora (Speech Commands).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import wave
import zlib
from pathlib import Path

import numpy as np

from .errors import DataError, one_line
from .recipe import SPEECH_SOURCES, SpeechConfig

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
CLIP_FRAMES = SAMPLE_RATE  # 1 s
SILENCE, UNKNOWN = "_silence_", "_unknown_"
FORMAT_VERSION = 1
"""Bumped whenever the generator makes different clips from the same settings (a new cache key)."""
NOISES = ("white", "pink", "brown")
INSTALL_HINT = "install them (Debian/Ubuntu: apt-get install espeak-ng sox)"
LABEL = "synthetic speech, held-out voices"
"""What every number measured on ``kws:`` data is (report.json ``dataset.label``): machine voices,
never to be compared with recorded corpora."""
ABOUT = ("synthetic speech: words spoken by espeak-ng voices (accent + variant), 16 kHz, 1 s, level, time shift "
         "and background noise by sox and numpy; split by voice (held-out voices); not comparable with recorded "
         "speech (Speech Commands)")
_TIMEOUT_S = 60
_BUILDING = ".building-"
_MARKER = ".edgekit-kws-build"


# --- the tools -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Tools:
    """Where espeak-ng and sox are, their versions, and espeak-ng's data folder (for variants)."""

    espeak: str
    sox: str
    espeak_version: str
    sox_version: str
    espeak_data: Path | None


def _run(args: list[str], *, data: bytes | None = None) -> subprocess.CompletedProcess:
    """``args`` run without a shell; a :class:`DataError` naming the program when it cannot be
    started or runs longer than ``_TIMEOUT_S``."""
    try:
        return subprocess.run(args, input=data, capture_output=True, timeout=_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise DataError(f"{args[0]} ran longer than {_TIMEOUT_S} s ({' '.join(args[1:6])} ...); is it "
                        "working? try it by hand") from None
    except OSError as exc:
        raise DataError(f"{args[0]}: cannot run it ({one_line(exc)}); {INSTALL_HINT}") from None


def tools() -> Tools:
    """Find espeak-ng and sox on PATH and read their versions; a :class:`DataError` (one line)
    when either is missing or does not answer."""
    found = {name: shutil.which(name) for name in ("espeak-ng", "sox")}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise DataError(f"{' and '.join(missing)} not found on PATH: data.source kws:espeak generates its speech with "
                        f"espeak-ng and sox; {INSTALL_HINT}")
    versions = {}
    for name, path in found.items():
        done = _run([path, "--version"])
        text = " ".join((done.stdout or b"").decode("utf-8", "replace").split())
        if done.returncode != 0 or not text:
            raise DataError(f"{path} --version failed (exit {done.returncode}); {INSTALL_HINT}")
        versions[name] = text
    # the version words only: sox prints the path it was called by, which must not change the cache key
    m = re.search(r"(eSpeak NG\b.*?)\s+Data at:\s+(\S+)", versions["espeak-ng"])
    espeak_version = m.group(1) if m else versions["espeak-ng"]
    s = re.search(r"SoX v\S+", versions["sox"])
    return Tools(found["espeak-ng"], found["sox"], espeak_version, s.group(0) if s else versions["sox"],
                 Path(m.group(2)) if m else None)


# --- the plan: every random choice, drawn before any program runs ----------------------------

@dataclasses.dataclass(frozen=True)
class Clip:
    voice: int            # index into the voices list
    label: int            # class index
    text: str             # the word spoken ("" for _silence_)
    rate_wpm: int
    pitch: int
    peak_db: float
    shift: float          # where the word sits: 0 at the start of the second, 1 at its end
    noise: int            # index into NOISES
    noise_db: float
    noise_seed: int


def class_names(cfg: SpeechConfig) -> list[str]:
    """Class ``i``'s name: the keywords, then ``_silence_`` and ``_unknown_`` when present."""
    return list(cfg.words) + ([SILENCE] if cfg.silence else []) + ([UNKNOWN] if cfg.unknown_words else [])


def voices(cfg: SpeechConfig) -> list[str]:
    """The voices used (``accent+variant``), in the order of the accents, then the variants; when
    ``cfg.voices`` is below every pair, a seeded draw of that many."""
    pairs = [f"{a}+{v}" for a in cfg.accents for v in cfg.variants]
    if cfg.voices is None or cfg.voices >= len(pairs):
        return pairs
    rng = np.random.default_rng([cfg.seed, 1])
    keep = np.sort(rng.choice(len(pairs), size=cfg.voices, replace=False))
    return [pairs[i] for i in keep]


def split_voices(cfg: SpeechConfig) -> dict[str, list[str]]:
    """``{"train", "val", "test"}`` voices: a seeded draw of ``test_voices`` and ``val_voices``."""
    names = voices(cfg)
    order = np.random.default_rng([cfg.seed, 2]).permutation(len(names))
    test = sorted(order[:cfg.test_voices])
    val = sorted(order[cfg.test_voices:cfg.test_voices + cfg.val_voices])
    train = sorted(order[cfg.test_voices + cfg.val_voices:])
    return {"train": [names[i] for i in train], "val": [names[i] for i in val], "test": [names[i] for i in test]}


def plan(cfg: SpeechConfig) -> list[Clip]:
    """Every clip's settings, voice by voice, class by class, repeat by repeat. Each voice draws
    from its own Generator seeded by (seed, a checksum of its name)."""
    names = class_names(cfg)
    out = []
    for vi, voice in enumerate(voices(cfg)):
        rng = np.random.default_rng([cfg.seed, 3, zlib.crc32(voice.encode())])
        for label, name in enumerate(names):
            for _ in range(cfg.repeats):
                if name == SILENCE:
                    text = ""
                elif name == UNKNOWN:
                    text = cfg.unknown_words[int(rng.integers(len(cfg.unknown_words)))]
                else:
                    text = name
                out.append(Clip(
                    voice=vi, label=label, text=text,
                    rate_wpm=int(rng.integers(cfg.rate_wpm[0], cfg.rate_wpm[1] + 1)),
                    pitch=int(rng.integers(cfg.pitch[0], cfg.pitch[1] + 1)),
                    peak_db=round(float(rng.uniform(*cfg.peak_db)), 2),
                    shift=round(float(rng.uniform(0.0, 1.0)), 4),
                    noise=int(rng.integers(len(NOISES))),
                    noise_db=round(float(rng.uniform(*cfg.noise_db)), 2),
                    noise_seed=int(rng.integers(2**63 - 1))))
    return out


def _generator_settings(cfg: SpeechConfig) -> dict:
    """What shapes the clips (the split sizes do not: the same clips are split at load)."""
    keep = ("words", "unknown_words", "silence", "accents", "variants", "voices", "repeats", "rate_wpm", "pitch",
            "peak_db", "noise_db", "seed")
    return {k: getattr(cfg, k) for k in keep}


def cache_key(cfg: SpeechConfig, t: Tools) -> str:
    """sha256 (hex, 16 characters) of the generator settings, its format version and the tool versions."""
    blob = json.dumps({"format": FORMAT_VERSION, "settings": _generator_settings(cfg),
                       "espeak-ng": t.espeak_version, "sox": t.sox_version}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_root() -> Path:
    """``$EDGEKIT_CACHE``, else ``$XDG_CACHE_HOME/edgekit``, else ``~/.cache/edgekit``."""
    env = os.environ.get("EDGEKIT_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "edgekit"


# --- making one clip -------------------------------------------------------------------------

def _noise(kind: str, seed: int, db: float) -> np.ndarray:
    """``CLIP_FRAMES`` samples of white, pink (1/f power) or brown (1/f²) noise at ``db`` dBFS RMS."""
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(CLIP_FRAMES)
    if kind == "white":
        x = white
    else:
        spec = np.fft.rfft(white)
        f = np.arange(len(spec), dtype="float64")
        f[0] = 1.0
        spec /= np.sqrt(f) if kind == "pink" else f
        spec[0] = 0.0
        x = np.fft.irfft(spec, n=CLIP_FRAMES)
    rms = float(np.sqrt(np.mean(x * x)))
    return x * (10.0 ** (db / 20.0) / rms) if rms > 0 else x


def _voiced(pcm: np.ndarray, rate: int) -> tuple[int, int]:
    """(first, count) of the frames between the first and last frame above 1 % of the peak, with
    10 ms kept on each side: espeak-ng's leading and trailing silence cut off."""
    peak = int(np.abs(pcm).max()) if len(pcm) else 0
    if peak == 0:
        return 0, 0
    loud = np.flatnonzero(np.abs(pcm) > peak * 0.01)
    pad = rate // 100
    first = max(int(loud[0]) - pad, 0)
    last = min(int(loud[-1]) + pad + 1, len(pcm))
    return first, last - first


def _speak(t: Tools, voice: str, clip: Clip) -> tuple[np.ndarray, int]:
    """The word of ``clip`` as float64 samples, 16 kHz, exactly 1 s (espeak-ng, then sox), and
    how many 16 kHz frames the spoken word takes (above 1 s its end is cut)."""
    args = [t.espeak, "-v", voice, "-s", str(clip.rate_wpm), "-p", str(clip.pitch), "--stdout", clip.text]
    done = _run(args)
    if done.returncode != 0 or not done.stdout:
        why = one_line(done.stderr.decode("utf-8", "replace")) if done.stderr else f"exit {done.returncode}"
        raise DataError(f"espeak-ng failed for voice {voice!r}, word {clip.text!r} ({why}); check "
                        "data.speech.accents and data.speech.variants (espeak-ng --voices=en, --voices=variant)")
    try:
        with wave.open(io.BytesIO(done.stdout), "rb") as w:
            rate, width, frames = w.getframerate(), w.getsampwidth(), w.getnframes()
            raw = w.readframes(frames)
    except (wave.Error, EOFError) as exc:
        raise DataError(f"espeak-ng gave no readable .wav for voice {voice!r} ({one_line(exc)})") from None
    if width != 2:
        raise DataError(f"espeak-ng wrote {8 * width}-bit samples for voice {voice!r}; 16-bit expected")
    pcm = np.frombuffer(raw, dtype="<i2")
    first, count = _voiced(pcm, rate)
    if count == 0:
        raise DataError(f"espeak-ng spoke nothing for voice {voice!r}, word {clip.text!r}")
    spoken = int(round(count * SAMPLE_RATE / rate))
    offset = int(round(clip.shift * max(CLIP_FRAMES - spoken, 0)))
    args = [t.sox, "-R", "-D", "-q", "-t", "wav", "-", "-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1",
            "-", "trim", f"{first}s", f"{count}s", "rate", "-h", str(SAMPLE_RATE), "gain", "-n", f"{clip.peak_db:.2f}",
            "pad", f"{offset}s", f"{CLIP_FRAMES}s", "trim", "0s", f"{CLIP_FRAMES}s"]
    done = _run(args, data=done.stdout)
    out = np.frombuffer(done.stdout, dtype="<f4")
    if done.returncode != 0 or len(out) != CLIP_FRAMES:
        why = one_line(done.stderr.decode("utf-8", "replace")) if done.stderr else f"exit {done.returncode}"
        raise DataError(f"sox failed on voice {voice!r}, word {clip.text!r}: {len(out)} of {CLIP_FRAMES} "
                        f"samples ({why})")
    return out.astype("float64"), spoken


def _make(t: Tools, voice: str, clip: Clip) -> tuple[np.ndarray, int]:
    """One clip as 16-bit PCM, the word (none for silence) plus its noise clipped to the range,
    and the word's length in frames."""
    x, spoken = _speak(t, voice, clip) if clip.text else (np.zeros(CLIP_FRAMES), 0)
    x = x + _noise(NOISES[clip.noise], clip.noise_seed, clip.noise_db)
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype("<i2"), spoken


def _check_voices(t: Tools, cfg: SpeechConfig) -> None:
    """Every accent must be an espeak-ng voice (it fails on an unknown one) and every variant a
    file of its data folder (an unknown variant silently falls back to the plain voice)."""
    for accent in cfg.accents:
        done = _run([t.espeak, "-v", accent, "--stdout", "a"])
        if done.returncode != 0 or not done.stdout:
            raise DataError(f"data.speech.accents: espeak-ng has no voice {accent!r} (espeak-ng --voices=en lists "
                            "them)")
    if t.espeak_data is not None:
        have = {p.name for p in (t.espeak_data / "voices" / "!v").glob("*")}
        unknown = [v for v in cfg.variants if v not in have]
        if unknown:
            raise DataError(f"data.speech.variants: espeak-ng has no variant {', '.join(map(repr, unknown))} "
                            f"(espeak-ng --voices=variant; files in {t.espeak_data / 'voices' / '!v'})")


def _workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


# --- building and reading the cache ----------------------------------------------------------

def _remove_stale_builds(root: Path, key: str) -> None:
    """Remove temporary build folders of ``key`` that an edgekit on this host started and that
    died (its process is gone): only folders named by edgekit that hold its marker file."""
    host = socket.gethostname()
    for p in root.glob(f".kws-{key}{_BUILDING}*"):
        m = re.fullmatch(rf"\.kws-{key}{re.escape(_BUILDING)}(.+)-(\d+)-[A-Za-z0-9_]+", p.name)
        if not m or m.group(1) != host or not (p / _MARKER).is_file() or p.is_symlink():
            continue
        try:
            os.kill(int(m.group(2)), 0)
            continue  # still building
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        log.info("removing %s, the temporary folder of a build that did not finish", p)
        shutil.rmtree(p, ignore_errors=True)


def build(cfg: SpeechConfig, t: Tools, folder: Path) -> dict:
    """Make every clip of ``cfg`` into ``folder`` (``clips.npz`` and ``meta.json``); returns the meta."""
    _check_voices(t, cfg)
    names = voices(cfg)
    clips = plan(cfg)
    start = time.perf_counter()
    x = np.zeros((len(clips), CLIP_FRAMES), dtype="<i2")
    spoken = np.zeros(len(clips), dtype="int64")
    with concurrent.futures.ThreadPoolExecutor(max_workers=_workers()) as pool:
        futures = {pool.submit(_make, t, names[c.voice], c): i for i, c in enumerate(clips)}
        try:
            for fut in concurrent.futures.as_completed(futures):
                x[futures[fut]], spoken[futures[fut]] = fut.result()
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    seconds = time.perf_counter() - start
    cut = int((spoken > CLIP_FRAMES).sum())
    if cut:
        log.warning("kws:espeak: %d of %d words are longer than 1 s and were cut at the end; raise the lower "
                    "bound of data.speech.rate_wpm", cut, len(clips))
    arrays = {"x": x, "y": np.asarray([c.label for c in clips], dtype="int64"),
              "voice": np.asarray([c.voice for c in clips], dtype="int64"), "spoken_frames": spoken}
    for field in ("rate_wpm", "pitch", "peak_db", "shift", "noise", "noise_db"):
        arrays[field] = np.asarray([getattr(c, field) for c in clips])
    arrays["text"] = np.asarray([c.text for c in clips], dtype="U24")
    with open(folder / "clips.npz", "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    meta = {"source": SPEECH_SOURCES[0], "format": FORMAT_VERSION, "about": ABOUT, "espeak-ng": t.espeak_version,
            "sox": t.sox_version, "sample_rate": SAMPLE_RATE, "clip_frames": CLIP_FRAMES,
            "settings": _generator_settings(cfg), "classes": class_names(cfg), "voices": names, "noises": list(NOISES),
            "clips": len(clips), "words_cut": cut, "x_sha256": hashlib.sha256(x.tobytes()).hexdigest(),
            "build_seconds": round(seconds, 2), "workers": _workers()}
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def ensure(cfg: SpeechConfig) -> tuple[Path, bool]:
    """The cache folder of ``cfg`` (built now when it is not there yet) and whether it was there."""
    t = tools()
    key = cache_key(cfg, t)
    root = cache_root()
    final = root / f"kws-{key}"
    if (final / "meta.json").is_file():
        return final, True
    if final.exists() or final.is_symlink():
        raise DataError(f"{final}: exists but is not a finished edgekit speech cache (no meta.json); edgekit leaves "
                        "it alone: remove or rename it, or set EDGEKIT_CACHE to another folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{root}: cannot create the speech cache folder ({one_line(exc)}); set EDGEKIT_CACHE to a "
                        "writable folder") from None
    _remove_stale_builds(root, key)
    tmp = Path(tempfile.mkdtemp(prefix=f".kws-{key}{_BUILDING}{socket.gethostname()}-{os.getpid()}-", dir=root))
    try:
        (tmp / _MARKER).write_text("a temporary edgekit kws:espeak build; safe to delete when no build runs\n")
        log.info("kws:espeak: generating %d clips with %s and %s into %s (once; cached)", cfg.clip_count(),
                 t.espeak_version, t.sox_version, final)
        meta = build(cfg, t, tmp)
        (tmp / _MARKER).unlink()
        tmp.chmod(0o755)  # mkdtemp made it 0700
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "meta.json").is_file():
                raise
            log.info("kws:espeak: another build finished first; using %s", final)
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log.info("kws:espeak: %d clips in %.1f s (%d workers)", meta["clips"], meta["build_seconds"],
                     meta["workers"])
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final, False


def read(folder: Path) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and meta of a cache folder, checked against the sha256 its build recorded."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        with np.load(folder / "clips.npz", allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{folder}: unreadable speech cache ({one_line(exc)}); delete the folder to rebuild it") from None
    x = arrays.get("x")
    if x is None or hashlib.sha256(x.tobytes()).hexdigest() != meta.get("x_sha256"):
        raise DataError(f"{folder}: the speech cache does not match the checksum of its build; delete the folder to "
                        "rebuild it")
    return arrays, meta


def load(source: str, cfg: SpeechConfig | None, *, max_bytes: int | None = None
         ) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[str]]:
    """``[(x_train, y_train), (x_val, y_val), (x_test, y_test)]`` split by voice (no validation
    pair when ``val_voices`` is 0) and the class names. x float32 (n, 16000, 1) in [-1, 1), y int64.
    Clips above ``max_bytes`` as float32 are refused before anything is built."""
    if source not in SPEECH_SOURCES:
        raise DataError(f"unknown speech source {source!r} (known: {', '.join(SPEECH_SOURCES)})")
    cfg = cfg if cfg is not None else SpeechConfig()
    size = cfg.clip_count() * CLIP_FRAMES * 4
    if max_bytes is not None and size > max_bytes:
        raise DataError(f"data.speech: {cfg.clip_count()} clips are {size} bytes as float32, above the limit of "
                        f"{max_bytes} bytes (EDGEKIT_MAX_ARRAY_BYTES); use fewer voices or repeats")
    folder, _ = ensure(cfg)
    arrays, meta = read(folder)
    split = split_voices(cfg)
    index = {v: i for i, v in enumerate(meta["voices"])}
    parts = []
    for name in ("train", "val", "test"):
        if not split[name]:
            continue
        keep = np.isin(arrays["voice"], [index[v] for v in split[name]])
        x = (arrays["x"][keep].astype("float32") / 32768.0)[..., None]
        parts.append((x, arrays["y"][keep].astype("int64")))
    log.info("kws:espeak: %s; voices train %d, val %d, test %d", folder, len(split["train"]), len(split["val"]),
             len(split["test"]))
    return parts, list(meta["classes"])


def describe(source: str, cfg: SpeechConfig | None = None) -> dict:
    """What ``edgekit datasets show kws:espeak`` prints: what it is, the tool versions, the cache
    folder, the voices and clips of every split and class (builds the cache when it is missing)."""
    if source not in SPEECH_SOURCES:
        raise DataError(f"unknown speech source {source!r} (known: {', '.join(SPEECH_SOURCES)})")
    cfg = cfg if cfg is not None else SpeechConfig()
    folder, cached = ensure(cfg)
    arrays, meta = read(folder)
    split = split_voices(cfg)
    index = {v: i for i, v in enumerate(meta["voices"])}
    counts = {}
    for name in ("train", "val", "test"):
        keep = np.isin(arrays["voice"], [index[v] for v in split[name]])
        counts[name] = np.bincount(arrays["y"][keep], minlength=len(meta["classes"]))
    return {"source": source, "about": ABOUT, "label": LABEL,
            "espeak-ng": meta["espeak-ng"], "sox": meta["sox"], "cache": str(folder),
            "built": "cached" if cached else f"now, in {meta['build_seconds']} s",
            "build_seconds": meta["build_seconds"], "sample_rate": SAMPLE_RATE, "clip_shape": [CLIP_FRAMES, 1],
            "clips": meta["clips"], **{name: int(counts[name].sum()) for name in ("train", "val", "test")},
            "voices": {name: split[name] for name in ("train", "val", "test")},
            "classes": {c: {"index": i, **{name: int(counts[name][i]) for name in ("train", "val", "test")}}
                        for i, c in enumerate(meta["classes"])}}
