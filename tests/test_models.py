"""The zoo: every model builds, converts to full int8 and runs in TFLite Micro; the MLPerf Tiny
reference architectures have the reference parameter counts."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgekit.models import create_model, list_models, model_rank

# name -> (input shape, classes, params at width 1). The MLPerf Tiny counts follow the
# reference training code layer for layer (mlcommons/tiny benchmark/training/*): ResNet-8 with
# 16 stem filters on 32x32x3 (78,666), DS-CNN with 64 filters on 49x10 MFCCs (24,908),
# MobileNetV1 at width 0.25 on 96x96x3 (221,794), and the dense autoencoder on 640 inputs
# (269,992); ours output logits (no softmax layer, which has no parameters).
REFERENCE = {
    "resnet8": ((32, 32, 3), 10, 78_666),
    "ds_cnn": ((49, 10, 1), 12, 24_908),
    "mobilenet_v1_025": ((96, 96, 3), 2, 221_794),
    "fc_autoencoder": ((640, 1), 1, 269_992),
}
SMALL_SHAPE = {3: (8, 8, 1), 2: (40, 1)}
ARENA_BYTES = 2 * 1024 * 1024   # more than any zoo model needs at these shapes


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_reference_parameter_counts(name):
    shape, classes, params = REFERENCE[name]
    assert create_model(name, input_shape=shape, num_classes=classes).count_params() == params


@pytest.mark.parametrize("name", sorted(list_models()))
def test_width_scales_every_model(name):
    shape, classes = SMALL_SHAPE[model_rank(name)], 10   # small inputs: the widths, not the shapes, matter here
    full = create_model(name, input_shape=shape, num_classes=classes).count_params()
    half = create_model(name, input_shape=shape, num_classes=classes, width=0.5).count_params()
    assert half < full


def test_unknown_model_and_wrong_rank():
    from edgekit.errors import RecipeError

    with pytest.raises(RecipeError, match="did you mean 'resnet8'"):
        create_model("resnet9", input_shape=(32, 32, 3), num_classes=10)
    with pytest.raises(RecipeError, match="takes inputs of rank 3"):
        create_model("resnet8", input_shape=(40, 1), num_classes=10)


@pytest.mark.parametrize("name", sorted(list_models()))
def test_every_model_runs_full_int8_in_tflite_micro(name, zoo_int8, tmp_path):
    """Full-integer conversion (int8 in and out; the session's zoo_int8, at small input shapes)
    has only ops TFLite Micro has kernels for, and two inferences in TFLite Micro match LiteRT's
    on the same file to within one quantization step. (The arena search itself is tested in
    test_mcu.py and runs for every cortex-m4 target of a pipeline run.)"""
    _runs_in_tflite_micro(zoo_int8[name], tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_mlperf_models_run_full_int8_in_tflite_micro_at_reference_shapes(name, zoo_reference_int8, tmp_path):
    """The same for the MLPerf Tiny models at their reference input shapes (MobileNetV1 at
    96x96x3 takes a while in TFLite Micro's reference kernels)."""
    _runs_in_tflite_micro(zoo_reference_int8[name], tmp_path)


def _runs_in_tflite_micro(zoo, tmp_path) -> None:
    from edgekit import mcu
    from edgekit.ondevice import evaluate as ev

    path = zoo.full_int8
    mcu.check_ops(mcu.model_ops(path.read_bytes()))
    np.save(tmp_path / "x.npy", zoo.x[:2])
    code = ("import json, sys, numpy as np; sys.path.insert(0, sys.argv[1]); import evaluate as ev;"
            "out = ev.predict_outputs(sys.argv[2], np.load(sys.argv[3]), runtime='tflite_micro', "
            "arena_bytes=int(sys.argv[4])); print(json.dumps(out.tolist()))")
    run = subprocess.run([sys.executable, "-c", code, str(ev.__file__).rsplit("/", 1)[0], str(path),
                          str(tmp_path / "x.npy"), str(ARENA_BYTES)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    micro = np.array(json.loads(run.stdout.strip().splitlines()[-1]))
    lite = ev.predict_outputs(str(path), zoo.x[:2], runtime="ai_edge_litert")
    scale = _output_scale(path)
    np.testing.assert_allclose(micro.reshape(lite.shape), lite, atol=scale * 1.01)


def _output_scale(path) -> float:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    return float(it.get_output_details()[0]["quantization"][0])
