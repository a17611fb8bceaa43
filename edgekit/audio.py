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
end as a small float32 TFLite model (input ``(1, 16000)``, output ``(1, 49, K, 1)``) from ops that
both LiteRT and TensorFlow Lite Micro run (RESHAPE, STRIDED_SLICE, CONCATENATION, PAD, MUL,
TRANSPOSE, FULLY_CONNECTED / BATCH_MATMUL, ADD, SUB, LOG): the 512-point DFT is computed as a
16 x 32 Cooley-Tukey factorization (two small DFT matrices and a twiddle multiply), so its
constants take about 40 KB instead of the ~1 MB of a dense 480 x 257 cos/sin pair, and only the
bins below 4000 Hz are computed. A device feeds the model the output of ``frontend.tflite``;
``tests/test_audio.py`` shows the two agree (numpy vs LiteRT vs TFLite Micro) within
:data:`TOLERANCE`.

This module imports numpy only; :func:`frontend_tflite` imports TensorFlow when called.
"""

from __future__ import annotations

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

TOLERANCE = 1e-3
"""Largest absolute difference allowed between the numpy reference and the TFLite front end
(LiteRT or TFLite Micro) on any feature of the same clip, in feature units (natural-log energy
or MFCC). Measured differences are far smaller (docs/data.md); float32 rounding in the factorized
FFT and the log of small energies is what remains."""

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


def frontend_tflite(kind: str = "mfcc") -> bytes:
    """The front end as a float32 TFLite model: input ``(1, 16000)`` float32, output
    ``(1, 49, K, 1)`` float32 (the model's input, before any ``preprocess.json`` normalization).

    The DFT is split as 512 = 16 x 32 (n = 32 n1 + n2, k = k1 + 16 k2): a 16-point DFT over n1
    (a (16, 16) cos and sin matmul), the twiddle factors ``exp(-2 pi i n2 k1 / 512)`` (elementwise),
    then a 32-point DFT over n2 restricted to the k2 whose bins k < :func:`_used_bins` (128 bins:
    up to 4000 Hz); the mel matrix's rows are permuted to the (k1, k2) order. Deterministic for a
    given TensorFlow version. Imports TensorFlow.
    """
    from ._tf import tf as get_tf

    _check_kind(kind)
    tf = get_tf()
    f32 = "float32"
    bins = _used_bins()
    k2n = bins // _N1
    blocks = CLIP_SAMPLES // HOP_SAMPLES                      # 50 blocks of 320 samples
    tail = WINDOW_SAMPLES - HOP_SAMPLES                       # each frame: block i + 160 of block i+1
    n1 = np.arange(_N1)
    c16 = np.cos(2 * np.pi * np.outer(n1, n1) / _N1).astype(f32)                 # [n1, k1]
    s16 = np.sin(2 * np.pi * np.outer(n1, n1) / _N1).astype(f32)
    n2, k1 = np.arange(_N2)[:, None], np.arange(_N1)[None, :]
    tw_re = np.cos(2 * np.pi * n2 * k1 / FFT_SIZE).astype(f32)                   # [n2, k1]
    tw_im = -np.sin(2 * np.pi * n2 * k1 / FFT_SIZE).astype(f32)
    k2 = np.arange(k2n)[None, :]
    c32 = np.cos(2 * np.pi * n2 * k2 / _N2).astype(f32)                           # [n2, k2]
    s32 = np.sin(2 * np.pi * n2 * k2 / _N2).astype(f32)
    mel = mel_matrix()
    mel_perm = np.stack([mel[kk1 + _N1 * kk2] for kk1 in range(_N1) for kk2 in range(k2n)]).astype(f32)
    post = (mel_perm, (dct_matrix().astype(f32) if kind == "mfcc" else None))
    window = hann_window().astype(f32)
    k_out = FRONTENDS[kind]

    @tf.function(input_signature=[tf.TensorSpec([1, CLIP_SAMPLES], tf.float32, name="waveform")])
    def frontend(wave):
        b = tf.reshape(wave, [blocks, HOP_SAMPLES])
        frames = tf.concat([b[:FRAMES], b[1:FRAMES + 1, :tail]], axis=1)          # (49, 480)
        x = tf.pad(frames * window, [[0, 0], [0, FFT_SIZE - WINDOW_SAMPLES]])     # (49, 512)
        x = tf.transpose(tf.reshape(x, [FRAMES, _N1, _N2]), [0, 2, 1])            # (49, n2, n1)
        a_re = tf.matmul(x, c16)                                                   # (49, n2, k1)
        a_im = -tf.matmul(x, s16)
        b_re = a_re * tw_re - a_im * tw_im
        b_im = a_re * tw_im + a_im * tw_re
        b_re = tf.transpose(b_re, [0, 2, 1])                                       # (49, k1, n2)
        b_im = tf.transpose(b_im, [0, 2, 1])
        x_re = tf.matmul(b_re, c32) + tf.matmul(b_im, s32)                         # (49, k1, k2)
        x_im = tf.matmul(b_im, c32) - tf.matmul(b_re, s32)
        power = tf.reshape(x_re * x_re + x_im * x_im, [FRAMES, _N1 * k2n])
        feats = tf.math.log(tf.matmul(power, post[0]) + LOG_FLOOR)                 # (49, 40)
        if post[1] is not None:
            feats = tf.matmul(feats, post[1])                                      # (49, 10)
        return tf.reshape(feats, [1, FRAMES, k_out, 1])

    conv = tf.lite.TFLiteConverter.from_concrete_functions([frontend.get_concrete_function()], frontend)
    blob = conv.convert()
    log.info("front end %s as TFLite: %d bytes", kind, len(blob))
    return bytes(blob)
