"""Target kind ``rpi``: a Raspberry Pi (or any Linux board with Python).

Ships what :mod:`.mobile` ships for its formats plus ``bundle/``: the primary model, the
standalone evaluator, the test sample, ``requirements.txt`` and ``run.sh`` (copy it to the Pi
and run ``sh run.sh``; ``edgekit deploy`` does that over SSH). With an audio front end
(``data.frontend``) the bundle also holds ``frontend.tflite``, ``frontend.json``, ``labels.txt``
and ``classify.sh`` (``sh classify.sh clip.wav`` prints the class). RAM budget: RSS growth.
"""

from __future__ import annotations

from pathlib import Path

from .base import ConvertContext, TargetKindSpec, write_frontend, write_preprocess
from .mobile import tflite_formats

RUN_SH = """#!/bin/sh
# Run the edgekit evaluator on this device and print its JSON report.
# Usage: sh run.sh [extra evaluate.py options, e.g. --threads 4 --runs 200]
# Needs: python3 with the packages in requirements.txt (pip install -r requirements.txt);
# set PYTHON to use another interpreter (an absolute path: run.sh changes into its folder).
set -e
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
exec "$PY" evaluate.py --model {model} --data eval.npz "$@"
"""

# What the bundle's requirements.txt pins per runtime: versions known to run the models that
# TensorFlow 2.21 writes (tflite-runtime 2.14 needs numpy<2; DESIGN.md "Checked to work here").
BUNDLE_REQUIREMENTS = {
    "ai_edge_litert": "ai-edge-litert==2.3.0\nnumpy>=1.26\n",
    "tflite_runtime": "tflite-runtime==2.14.0\nnumpy<2\n",
    "onnxruntime": "onnxruntime>=1.17\nnumpy>=1.26\n",
}


def write_bundle(folder: Path, model: Path, eval_npz: Path, profile) -> list[Path]:
    """A self-contained folder to copy to a Pi: model, evaluator, test sample, requirements, run.sh.

    ``model.tflite`` (or ``model.onnx`` for an ONNX primary model), ``evaluate.py`` (the
    standalone evaluator, numpy + one runtime), ``eval.npz``, ``requirements.txt`` (the
    profile's runtime and numpy; ai-edge-litert for runtimes that have no Pi wheel) and
    ``run.sh`` (``sh run.sh [--runs N ...]`` prints the evaluator's JSON). Every file is
    written atomically; returns their paths.
    """
    from .._io import write_text
    from ..convert import EVALUATOR

    folder.mkdir(parents=True, exist_ok=True)
    name = "model.onnx" if model.suffix == ".onnx" else "model.tflite"
    runtime = "onnxruntime" if name == "model.onnx" else profile.runtime
    runtime_req = BUNDLE_REQUIREMENTS.get(runtime, BUNDLE_REQUIREMENTS["ai_edge_litert"])
    out = [write_text(folder / name, model.read_bytes()),
           write_text(folder / "evaluate.py", EVALUATOR.read_bytes()),
           write_text(folder / "eval.npz", eval_npz.read_bytes()),
           write_text(folder / "requirements.txt", f"# runtime for {profile.board or profile.name}\n{runtime_req}"),
           write_text(folder / "run.sh", RUN_SH.replace("{model}", name))]
    (folder / "run.sh").chmod(0o755)
    return out


CLASSIFY_SH = """#!/bin/sh
# Classify .wav recordings with the model behind its audio front end; prints FILE: LABEL (class I).
# Usage: sh classify.sh FILE.wav|FOLDER [more evaluate.py options, e.g. --out predictions.json]
# Clips: mono, 16 kHz, integer PCM, at most 1 s (shorter ones are padded with silence).
set -e
here="$(cd "$(dirname "$0")" && pwd)"
PY=${PYTHON:-python3}
exec "$PY" "$here/evaluate.py" --model "$here/{model}" --frontend "$here/frontend.tflite" --wav "$@"
"""


class RpiKind(TargetKindSpec):
    name = "rpi"
    ssh_bundle = True

    def convert(self, source, profile, ctx: ConvertContext) -> tuple[list, list[Path]]:
        arts = tflite_formats(source, profile, ctx)
        files = [a.path for a in arts] + write_bundle(ctx.out_dir / "bundle", arts[0].path, ctx.eval_npz, profile)
        files += write_preprocess(ctx, "bundle") + write_frontend(ctx, "bundle")
        if ctx.data.frontend is not None:  # a model behind an audio front end classifies .wav files
            from .._io import write_text

            name = "model.onnx" if arts[0].path.suffix == ".onnx" else "model.tflite"
            sh = write_text(ctx.out_dir / "bundle" / "classify.sh", CLASSIFY_SH.replace("{model}", name))
            sh.chmod(0o755)
            files.append(sh)
        return arts, files
