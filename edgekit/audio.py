"""The audio front end: 1 s waveforms at 16 kHz -> MFCC (or log-mel) features, host and device alike.

``data.frontend: mfcc`` gives the MLPerf Tiny keyword-spotting input: 49 frames x 10 MFCC
coefficients per clip, shape ``(49, 10, 1)``; ``data.frontend: logmel`` gives the 40 log-mel
energies per frame, ``(49, 40, 1)``. Every constant is below, with its unit; they are part of a
run's data fingerprint (:func:`frontend_params`).

Per clip (16000 float32 samples in [-1, 1)):

1. frames: 49 windows of :data:`WINDOW_SAMPLES` (480 = 30 ms), :data:`HOP_SAMPLES` (320 = 20 ms)
   apart, the first starting at sample 0 (no padding; the last ends at sample 15840);
2. each frame times a periodic Hann window ``0.5 - 0.5 cos(2 pi n / 480)``, zero-padded to
   :data:`FFT_SIZE` (512) samples, power spectrum ``|rfft|^2`` (257 bins, 31.25 Hz apart);
3. :data:`MEL_BANDS` (40) triangular mel filters (HTK mel scale ``1127 ln(1 + f / 700)``, band
   edges equally spaced in mel from :data:`LOWER_HZ` 20 Hz to :data:`UPPER_HZ` 4000 Hz, weights
   interpolated linearly in Hz, peak 1, no area normalization) summed over the power spectrum;
4. ``ln(mel + LOG_FLOOR)`` with :data:`LOG_FLOOR` 1e-6 (silence gives ln 1e-6 = -13.8);
5. ``mfcc``: orthonormal DCT-II of the 40 log-mel energies, first :data:`MFCC_COEFFICIENTS` (10)
   coefficients kept (``logmel`` stops at step 4).

Two implementations compute it. :func:`features` is the reference, in numpy (float64 FFT, float32
out), used on the host for training and test data. :func:`frontend_tflite` builds the same front
end as a small float32 TFLite model of one frame (input ``(1, 480)`` samples, output ``(1, K)``;
a clip is 49 invokes, as a microcontroller computes features while audio streams in) from ops
that both LiteRT and TensorFlow Lite Micro run (RESHAPE, TRANSPOSE, MUL, ADD, SUB,
FULLY_CONNECTED, LOG): the 512-point DFT is a 16 x 32 Cooley-Tukey factorization (two small DFT
matrices and a twiddle multiply), so the file is about 37 KB instead of the ~1 MB of a dense
480 x 257 cos/sin pair, and only the bins below 4000 Hz are computed. A device feeds its model
what ``frontend.tflite`` gives; ``tests/test_audio.py`` shows the two agree (numpy vs LiteRT vs
TFLite Micro) within :data:`TOLERANCE` on the same clips, and ``tools/bench_frontend.py``
measures the agreement, the file size and the TFLite Micro arena.

This module imports numpy only; :func:`frontend_tflite` imports TensorFlow when called.
"""

from __future__ import annotations

import functools
import logging
import math

import numpy as np

from .errors import DataError

log = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 16_000
"""Sample rate the front end takes (Hz); other rates are refused (resample first)."""
CLIP_SAMPLES = 16_000
"""Samples per clip: 1 s at 16 kHz."""
WINDOW_SAMPLES = 480
"""Frame (analysis window) length: 30 ms."""
HOP_SAMPLES = 320
"""Step between frame starts: 20 ms."""
FRAMES = 1 + (CLIP_SAMPLES - WINDOW_SAMPLES) // HOP_SAMPLES
"""Frames per clip: 49."""
FFT_SIZE = 512
"""DFT length (each 480-sample frame zero-padded to it): 257 power bins, 31.25 Hz apart."""
MEL_BANDS = 40
"""Triangular mel filters."""
LOWER_HZ = 20.0
"""Lower edge of the first mel filter (Hz)."""
UPPER_HZ = 4000.0
"""Upper edge of the last mel filter (Hz)."""
LOG_FLOOR = 1e-6
"""Added to each mel energy before the natural log, so silence is finite (ln 1e-6 = -13.8)."""
MFCC_COEFFICIENTS = 10
"""DCT-II coefficients kept by ``mfcc`` (the 0th, the log energy, included)."""

FRONTENDS = {"mfcc": MFCC_COEFFICIENTS, "logmel": MEL_BANDS}
"""``data.frontend`` values and the features per frame each gives."""

TOLERANCE = {"mfcc": 5e-3, "logmel": 1e-2}
"""Largest absolute difference allowed between the numpy reference and the TFLite front end
(LiteRT or TFLite Micro) on any feature of the same clip, in feature units (MFCC, or natural-log
mel energy). Measured (docs/data.md): at most about 3e-5 on noise and speech-like clips; the
worst case is a loud pure tone (up to 0.002 mfcc, 0.006 logmel), where mel bands 60 dB or more
below the tone hold only float32 rounding noise of the FFT, which the log magnifies."""

# the 512-point DFT as N1 x N2 (Cooley-Tukey, decimation in time): n = N2*n1 + n2, k = k1 + N1*k2
_N1, _N2 = 16, 32


def frontend_params(kind: str) -> dict:
    """Every constant of front end ``kind`` (``mfcc`` or ``logmel``): part of the data fingerprint
    and of what a target ships, so a change in any of them is a different dataset."""
    _check_kind(kind)
    return {"kind": kind, "sample_rate_hz": SAMPLE_RATE_HZ, "clip_samples": CLIP_SAMPLES,
            "window_samples": WINDOW_SAMPLES, "window": "hann-periodic", "hop_samples": HOP_SAMPLES,
            "frames": FRAMES, "fft_size": FFT_SIZE, "mel_bands": MEL_BANDS, "mel_scale": "htk",
            "lower_hz": LOWER_HZ, "upper_hz": UPPER_HZ, "log_floor": LOG_FLOOR,
            "dct": "dct-ii-orthonormal" if kind == "mfcc" else None,
            "features_per_frame": FRONTENDS[kind], "output_shape": list(output_shape(kind))}


def output_shape(kind: str) -> tuple[int, int, int]:
    """Per-clip feature shape of front end ``kind``: (49, 10, 1) for mfcc, (49, 40, 1) for logmel."""
    _check_kind(kind)
    return FRAMES, FRONTENDS[kind], 1


def _check_kind(kind: str) -> None:
    if kind not in FRONTENDS:
        raise ValueError(f"unknown front end {kind!r} (known: {', '.join(FRONTENDS)})")


def hann_window() -> np.ndarray:
    """Periodic Hann window of :data:`WINDOW_SAMPLES` (float64)."""
    n = np.arange(WINDOW_SAMPLES)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / WINDOW_SAMPLES)


def _hz_to_mel(hz):
    return 1127.0 * np.log1p(np.asarray(hz, dtype="float64") / 700.0)


def _mel_to_hz(mel):
    return 700.0 * np.expm1(np.asarray(mel, dtype="float64") / 1127.0)


def mel_matrix() -> np.ndarray:
    """(257, 40) float64: weight of power bin k (frequency ``k * 16000 / 512`` Hz) in mel band m."""
    edges = _mel_to_hz(np.linspace(_hz_to_mel(LOWER_HZ), _hz_to_mel(UPPER_HZ), MEL_BANDS + 2))
    edges[0], edges[-1] = LOWER_HZ, UPPER_HZ  # exactly: the mel round trip may land a hair above 4000 Hz
    f = np.arange(FFT_SIZE // 2 + 1) * SAMPLE_RATE_HZ / FFT_SIZE
    lo, mid, hi = edges[:-2], edges[1:-1], edges[2:]
    up = (f[:, None] - lo[None, :]) / (mid - lo)[None, :]
    down = (hi[None, :] - f[:, None]) / (hi - mid)[None, :]
    return np.maximum(0.0, np.minimum(up, down))


def dct_matrix() -> np.ndarray:
    """(40, 10) float64: the first 10 basis vectors of the orthonormal DCT-II of 40 values."""
    n, k = np.arange(MEL_BANDS)[:, None], np.arange(MFCC_COEFFICIENTS)[None, :]
    m = np.cos(np.pi * k * (2 * n + 1) / (2 * MEL_BANDS)) * math.sqrt(2.0 / MEL_BANDS)
    m[:, 0] = 1.0 / math.sqrt(MEL_BANDS)
    return m


def check_waveforms(x: np.ndarray, *, name: str, sample_rate_hz: int | None) -> np.ndarray:
    """``x`` as float32 (n, 16000) clips, or a :class:`DataError` naming ``data.frontend`` and the
    fix: samples that are not 1 s mono waveforms (shape (16000,) or (16000, 1)), or a sample rate
    that is not 16 kHz (``sample_rate_hz`` None: the source does not say; taken as 16 kHz)."""
    if sample_rate_hz is not None and int(sample_rate_hz) != SAMPLE_RATE_HZ:
        raise DataError(f"dataset {name!r}: data.frontend needs {SAMPLE_RATE_HZ} Hz audio, the clips are "
                        f"{sample_rate_hz} Hz; resample them (e.g. sox IN -r {SAMPLE_RATE_HZ} OUT.wav)")
    shape = tuple(x.shape[1:])
    if len(shape) == 2 and shape[1] > 1 and shape[0] == CLIP_SAMPLES:
        raise DataError(f"dataset {name!r}: data.frontend takes mono clips, these have {shape[1]} channels; "
                        "mix them down (e.g. sox IN -c 1 OUT.wav)")
    if shape not in ((CLIP_SAMPLES,), (CLIP_SAMPLES, 1)):
        what = (f"{shape[0]} samples ({shape[0] / SAMPLE_RATE_HZ:g} s at {SAMPLE_RATE_HZ} Hz)"
                if len(shape) in (1, 2) and (len(shape) == 1 or shape[1] == 1) else f"samples of shape {shape}")
        raise DataError(f"dataset {name!r}: data.frontend takes 1 s clips of {CLIP_SAMPLES} samples, found {what}; "
                        f"cut or pad the clips to 1 s (for long recordings: data.window: {{length: {CLIP_SAMPLES}, "
                        f"stride: {CLIP_SAMPLES // 2}}}), or remove data.frontend")
    return np.asarray(x, dtype="float32").reshape(len(x), CLIP_SAMPLES)


def features(waves: np.ndarray, kind: str = "mfcc", *, chunk: int = 256) -> np.ndarray:
    """The reference front end: float32 ``(n, 49, K, 1)`` features of ``waves`` (``(n, 16000)`` or
    ``(n, 16000, 1)``, float, 16 kHz, about [-1, 1)). K is 10 for ``mfcc``, 40 for ``logmel``.

    Computed in float64 (numpy's FFT) ``chunk`` clips at a time, returned as float32.
    Raises ValueError for another shape or an unknown ``kind``.

    Example::

        x = features(np.zeros((2, 16000), "float32"))   # (2, 49, 10, 1)
    """
    _check_kind(kind)
    w = np.asarray(waves)
    if w.ndim == 3 and w.shape[2] == 1:
        w = w[..., 0]
    if w.ndim != 2 or w.shape[1] != CLIP_SAMPLES:
        raise ValueError(f"features takes (n, {CLIP_SAMPLES}) or (n, {CLIP_SAMPLES}, 1) waveforms, got {waves.shape}")
    starts = np.arange(FRAMES) * HOP_SAMPLES
    idx = starts[:, None] + np.arange(WINDOW_SAMPLES)[None, :]
    window, mel = hann_window(), mel_matrix()
    dct = dct_matrix() if kind == "mfcc" else None
    out = np.empty((len(w), FRAMES, FRONTENDS[kind], 1), dtype="float32")
    for i in range(0, len(w), chunk):
        frames = w[i:i + chunk].astype("float64")[:, idx] * window          # (c, 49, 480)
        power = np.abs(np.fft.rfft(frames, n=FFT_SIZE, axis=-1)) ** 2       # (c, 49, 257)
        logmel = np.log(power @ mel + LOG_FLOOR)                            # (c, 49, 40)
        out[i:i + chunk, :, :, 0] = logmel @ dct if dct is not None else logmel
    return out


def _used_bins() -> int:
    """Power bins 0..B-1 carry all non-zero mel weights; B rounded up to whole rows of N1 bins."""
    last = int(np.nonzero(mel_matrix().any(axis=1))[0].max())
    return (last // _N1 + 1) * _N1


@functools.lru_cache(maxsize=None)
def frontend_tflite(kind: str = "mfcc") -> bytes:
    """The front end as a float32 TFLite model of ONE frame: input ``(1, 480)`` float32 (samples
    ``320 f .. 320 f + 479`` of the clip for frame f), output ``(1, K)`` float32 (row f of the
    ``(49, K, 1)`` features, before any ``preprocess.json`` normalization). A clip's features are
    49 invokes (:func:`run_tflite`), as a microcontroller computes them while audio streams in.

    Per frame, not per clip: the whole-clip graph (input (1, 16000)) needed a TFLite Micro arena
    of 508 KB (measured), more than most Cortex-M4 boards have; one frame needs a few KB.

    The DFT is split as 512 = 16 x 32 (n = 32 n1 + n2, k = k1 + 16 k2; the frame's 480 samples
    are n1 < 15, the zero padding adds nothing): a 16-point DFT over n1 (a (15, 16) cos and sin
    matmul), the twiddle factors ``exp(-2 pi i n2 k1 / 512)`` (elementwise), then a 32-point DFT
    over n2 restricted to the k2 whose bins k < :func:`_used_bins` (128 bins: below 4000 Hz);
    the mel matrix's rows are permuted to the (k1, k2) order. Deterministic for a given
    TensorFlow version (built once per process and kind). Imports TensorFlow.
    """
    from ._tf import tf as get_tf

    _check_kind(kind)
    tf = get_tf()
    f32 = "float32"
    k2n = _used_bins() // _N1
    n1n = WINDOW_SAMPLES // _N2                                  # 15 rows of 32 samples hold the frame
    n1, k1 = np.arange(n1n)[:, None], np.arange(_N1)[None, :]
    c16 = np.cos(2 * np.pi * n1 * k1 / _N1).astype(f32)                          # [n1, k1]
    s16 = -np.sin(2 * np.pi * n1 * k1 / _N1).astype(f32)
    n2 = np.arange(_N2)[:, None]
    tw_re = np.cos(2 * np.pi * n2 * k1 / FFT_SIZE).astype(f32)                   # [n2, k1]
    tw_im = -np.sin(2 * np.pi * n2 * k1 / FFT_SIZE).astype(f32)
    k2 = np.arange(k2n)[None, :]
    c32 = np.cos(2 * np.pi * n2 * k2 / _N2).astype(f32)                           # [n2, k2]
    s32 = np.sin(2 * np.pi * n2 * k2 / _N2).astype(f32)
    mel = mel_matrix()
    mel_perm = np.stack([mel[kk1 + _N1 * kk2] for kk1 in range(_N1) for kk2 in range(k2n)]).astype(f32)
    dct = dct_matrix().astype(f32) if kind == "mfcc" else None
    window = hann_window().astype(f32)[None, :]

    @tf.function(input_signature=[tf.TensorSpec([1, WINDOW_SAMPLES], tf.float32, name="frame")])
    def frontend(frame):
        x = tf.transpose(tf.reshape(frame * window, [n1n, _N2]))                  # (n2, n1)
        a_re, a_im = tf.matmul(x, c16), tf.matmul(x, s16)                          # (n2, k1)
        b_re = tf.transpose(a_re * tw_re - a_im * tw_im)                           # (k1, n2)
        b_im = tf.transpose(a_re * tw_im + a_im * tw_re)
        x_re = tf.matmul(b_re, c32) + tf.matmul(b_im, s32)                         # (k1, k2)
        x_im = tf.matmul(b_im, c32) - tf.matmul(b_re, s32)
        power = tf.reshape(x_re * x_re + x_im * x_im, [1, _N1 * k2n])
        feats = tf.math.log(tf.matmul(power, mel_perm) + LOG_FLOOR)                # (1, 40)
        return tf.matmul(feats, dct) if dct is not None else feats                 # (1, K)

    conv = tf.lite.TFLiteConverter.from_concrete_functions([frontend.get_concrete_function()], frontend)
    blob = conv.convert()
    log.info("front end %s as TFLite: %d bytes", kind, len(blob))
    return bytes(blob)


def frontend_json(kind: str, blob: bytes, *, arena: dict | None = None) -> dict:
    """What ``frontend.json`` says about ``frontend.tflite`` (``blob``): how to feed it, what it
    gives, every constant, the stated tolerance against the reference, its size and sha256, and
    (``arena``, for a microcontroller) the TFLite Micro arena measured for it."""
    import hashlib

    k = FRONTENDS[kind]
    return {
        "file": "frontend.tflite", "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest(),
        "input": {"shape": [1, WINDOW_SAMPLES], "dtype": "float32",
                  "what": f"one frame: samples {HOP_SAMPLES}*f .. {HOP_SAMPLES}*f+{WINDOW_SAMPLES - 1} of a mono "
                          f"{CLIP_SAMPLES}-sample clip at {SAMPLE_RATE_HZ} Hz, scaled to [-1, 1) (16-bit PCM / 32768), "
                          f"for f = 0..{FRAMES - 1}"},
        "output": {"shape": [1, k], "dtype": "float32",
                   "what": f"row f of the model's ({FRAMES}, {k}, 1) input; then preprocess.json if there is one"},
        "params": frontend_params(kind),
        "tolerance_max_abs": TOLERANCE[kind],
        "tolerance_note": "largest difference from edgekit's numpy reference (the training features) allowed by "
                          "its tests, in LiteRT and TFLite Micro",
        **({"tflm_arena": arena} if arena is not None else {}),
    }


def frames_of(waves: np.ndarray) -> np.ndarray:
    """float32 (n, 49, 480): the frames of (n, 16000) clips that the TFLite front end takes one at a time."""
    w = np.asarray(waves, dtype="float32").reshape(len(waves), CLIP_SAMPLES)
    idx = (np.arange(FRAMES) * HOP_SAMPLES)[:, None] + np.arange(WINDOW_SAMPLES)[None, :]
    return w[:, idx]

def synthetic_clips(n: int, *, seed: int = 0) -> np.ndarray:
    """(n, 16000) float32 clips of varied kinds, to check a front end implementation against
    :func:`features` (the tests and ``tools/bench_frontend.py`` use them): white noise at random
    levels, a tone, a chirp, silence, noise bursts under an envelope (speech-like), clipped
    full-scale noise, very quiet noise (1e-4). Deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    t = np.arange(CLIP_SAMPLES) / SAMPLE_RATE_HZ
    kinds = [
        lambda: rng.normal(0, rng.uniform(0.01, 0.3), t.size),
        lambda: rng.uniform(0.05, 0.9) * np.sin(2 * np.pi * rng.uniform(60, 7000) * t + rng.uniform(0, 6)),
        lambda: 0.3 * np.sin(2 * np.pi * (rng.uniform(50, 300) + rng.uniform(500, 3500) * t) * t),
        lambda: np.zeros(t.size),
        lambda: rng.normal(0, 0.2, t.size) * np.maximum(0, np.sin(2 * np.pi * rng.uniform(2, 6) * t)) ** 2,
        lambda: np.clip(rng.normal(0, 1, t.size), -1, 1),
        lambda: 1e-4 * rng.normal(size=t.size),
    ]
    return np.stack([kinds[i % len(kinds)]() for i in range(n)]).astype("float32")


def run_tflite(model: bytes | str, waves: np.ndarray, *, runtime: str = "ai_edge_litert",
               arena_bytes: int = 1 << 20) -> np.ndarray:
    """Features of ``waves`` ((n, 16000) float32) computed by the TFLite front end ``model`` (bytes
    or a path, see :func:`frontend_tflite`) in ``runtime``: ``ai_edge_litert`` or ``tflite_micro``
    (the TFLite Micro Python interpreter, with an arena of ``arena_bytes``), one frame per invoke as
    a device runs it. Returns float32 (n, 49, K, 1). Imports the runtime; ValueError for another."""
    blob = bytes(model) if isinstance(model, (bytes, bytearray)) else open(model, "rb").read()
    frames = frames_of(waves)
    out = []
    if runtime == "ai_edge_litert":
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_content=blob, num_threads=1)
        it.allocate_tensors()
        i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]

        def one(frame):
            it.set_tensor(i, frame[None])
            it.invoke()
            return it.get_tensor(o)[0].copy()
    elif runtime == "tflite_micro":
        from tflite_micro.python.tflite_micro import runtime as tflm

        it = tflm.Interpreter.from_bytes(blob, arena_size=int(arena_bytes))

        def one(frame):
            it.set_input(frame[None], 0)
            it.invoke()
            return np.array(it.get_output(0)[0], copy=True)
    else:
        raise ValueError(f"runtime {runtime!r}: expected ai_edge_litert or tflite_micro")
    for clip in frames:
        out.append(np.stack([one(f) for f in clip]))
    return np.stack(out).astype("float32")[..., None]
