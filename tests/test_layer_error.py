"""Per-layer int8 error named by Keras layer (edgekit.layer_error), checked against TF's debugger."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def sensitive(tmp_path_factory):
    """A small CNN whose middle conv is made sensitive on purpose: one huge weight per filter, so
    int8 weight quantization rounds the filter's other weights to zero."""
    from edgekit._tf import keras
    from edgekit.convert import to_tflite

    k = keras()
    L = k.layers
    k.utils.set_random_seed(0)
    model = k.Sequential([L.Input((8, 8, 1)), L.Conv2D(8, 3, padding="same", activation="relu", name="c1"),
                          L.Conv2D(8, 3, padding="same", activation="relu", name="c2"),
                          L.Conv2D(8, 3, padding="same", activation="relu", name="c3"),
                          L.Flatten(name="flat"), L.Dense(16, activation="relu", name="d1"), L.Dense(4, name="logits")])
    w = model.get_layer("c2").get_weights()
    w[0][0, 0, 0, :] = 200.0
    model.get_layer("c2").set_weights(w)
    x = np.random.default_rng(0).random((64, 8, 8, 1)).astype("float32")

    def rep():
        for i in range(32):
            yield [x[i:i + 1]]

    path = tmp_path_factory.mktemp("sensitive") / "model_int8.tflite"
    path.write_bytes(to_tflite(model, mode="int8", rep=rep))
    return model, path, x, rep


def test_worst_layer_is_the_one_the_tf_quantization_debugger_names(sensitive):
    from edgekit._tf import tf
    from edgekit.layer_error import layer_errors

    model, path, x, rep = sensitive
    res = layer_errors(model, path, x[32:])
    assert [r["layer"] for r in res["layers"]] == ["c1", "c2", "c3", "flat", "d1", "logits"]  # every layer named
    assert res["worst"][0] == "c2"
    by = {r["layer"]: r for r in res["layers"]}
    assert by["c2"]["snr_drop_db"] > 3 * max(by[n]["snr_drop_db"] for n in ("c3", "d1", "logits"))
    assert by["c1"]["nmse"] < by["c2"]["nmse"]

    lite = tf().lite
    conv = lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    debugger = lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=rep)
    debugger.run()
    buf = io.StringIO()
    debugger.layer_statistics_dump(buf)
    buf.seek(0)
    stats = list(csv.DictReader(buf))
    worst = max(stats, key=lambda r: float(r["mean_squared_error"]))["tensor_name"]
    assert "/c2/" in worst          # the debugger's largest per-op MSE is the same layer


def test_per_layer_on_a_finished_run_via_cli(finished_run, tmp_path):
    """`edgekit eval RUN --compare --per-layer --json` through the command's own parsing and output
    (in process: click's runner; what the console does to the process is tests/test_console.py's)."""
    from click.testing import CliRunner

    from edgekit.cli import main

    proc = CliRunner().invoke(main, ["eval", str(finished_run.out), "--compare", "--per-layer", "--json",
                                     "--threshold", "0"])
    assert proc.exit_code == 0, (proc.stderr[-2000:], proc.exception)
    result = json.loads(proc.stdout)
    pl = result["per_layer"]
    assert pl["reference"].startswith("stages/") and pl["artifacts"]
    for a in pl["artifacts"]:
        assert "error" not in a, a
        names = [r["layer"] for r in a["layers"]]
        assert names[-1] == "logits" and a["worst"] and set(a["worst"]) <= set(names)
        assert all(r["snr_db"] is None or r["snr_db"] > 0 for r in a["layers"])
    bad = CliRunner().invoke(main, ["eval", str(finished_run.out), "--per-layer"])
    assert bad.exit_code != 0 and "--per-layer goes with --compare" in bad.stderr
