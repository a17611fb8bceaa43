#!/usr/bin/env python3
"""Host/device agreement of the audio front end (edgekit.audio): the numpy reference against the
TFLite front end run by LiteRT and by TensorFlow Lite Micro, on the same clips; plus the
front end's file size and its TFLite Micro tensor arena (measured by running it). Usage:

    .venv/bin/python tools/bench_frontend.py [--clips N] [--seed S] [--wav DIR] [--kind mfcc|logmel]

``--clips N`` synthetic clips (edgekit.audio.synthetic_clips: noise, tones, chirps, silence,
bursts); ``--wav DIR`` also every 16 kHz mono 1 s .wav file under DIR (e.g. a kws cache).
Prints one JSON object: max and mean absolute error per pair, in feature units.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgekit import audio, mcu  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--wav", type=Path, default=None)
    p.add_argument("--kind", default="mfcc", choices=sorted(audio.FRONTENDS))
    a = p.parse_args()
    waves = [audio.synthetic_clips(a.clips, seed=a.seed)] if a.clips else []
    if a.wav is not None:
        from edgekit.wavs import read_wav

        for f in sorted(a.wav.rglob("*.wav")):
            x, rate = read_wav(f)
            if rate == audio.SAMPLE_RATE_HZ and x.shape == (audio.CLIP_SAMPLES, 1):
                waves.append(x.T)
    w = np.concatenate(waves)
    blob = audio.frontend_tflite(a.kind)
    ref = audio.features(w, a.kind)
    lite = audio.run_tflite(blob, w, runtime="ai_edge_litert")
    micro = audio.run_tflite(blob, w, runtime="tflite_micro")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "frontend.tflite"
        path.write_bytes(blob)
        arena = mcu.measure_arena(path, margin_fraction=0.0)

    def err(u, v):
        d = np.abs(u.astype("float64") - v)
        return {"max_abs": float(d.max()), "mean_abs": float(d.mean())}

    print(json.dumps({"kind": a.kind, "clips": len(w), "features": list(ref.shape[1:]),
                      "feature_range": [float(ref.min()), float(ref.max())], "tolerance": audio.TOLERANCE[a.kind],
                      "numpy_vs_litert": err(lite, ref), "numpy_vs_tflm": err(micro, ref),
                      "litert_vs_tflm": err(micro, lite), "size_bytes": len(blob),
                      "ops": mcu.model_ops(blob), "arena_min_bytes": arena.min_bytes,
                      "arena_pointer_bits": arena.pointer_bits, "tflm_version": arena.tflm_version}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
