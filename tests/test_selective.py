"""Selective precision chosen automatically (``convert.selective: auto``) and the per-layer int8
error in the run's report (edgekit.selective, edgekit.report).

The model: a small digits CNN made sensitive on purpose after training. Filter 7 of ``c2``
outputs a constant 1000 that ``c3`` ignores (its weights from that channel are zero), so the
float model computes what it did without that filter, but int8 spends ``c2``'s whole output range
on the constant: every other channel rounds to zero and the int8 model collapses. Keeping ``c2``
and ``c3`` (which reads it) at higher precision, float or int16 activations, repairs it.
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest


ROOT = Path(__file__).resolve().parents[1]


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype("float32")[..., None]
    y = d.target.astype("int64")
    idx = np.random.default_rng(0).permutation(len(x))
    return x[idx], y[idx]


def sensitive_model(c3_activation="relu"):
    """The trained digits CNN with ``c2`` made sensitive (see the module docstring)."""
    from edgekit._tf import keras

    k = keras()
    L = k.layers
    k.utils.set_random_seed(0)
    x, y = _digits()
    m = k.Sequential([L.Input((8, 8, 1)), L.Conv2D(8, 3, padding="same", activation="relu", name="c1"),
                      L.Conv2D(8, 3, padding="same", activation="relu", name="c2"),
                      L.Conv2D(8, 3, padding="same", activation=c3_activation, name="c3"),
                      L.Flatten(name="flat"), L.Dense(10, name="logits")])
    m.compile(optimizer=k.optimizers.Adam(0.01), loss=k.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
    m.fit(x[:1200], y[:1200], epochs=6, batch_size=32, verbose=0)
    w, b = m.get_layer("c2").get_weights()
    w[..., 7], b[7] = 0.0, 1000.0
    m.get_layer("c2").set_weights([w, b])
    w3, b3 = m.get_layer("c3").get_weights()
    w3[:, :, 7, :] = 0.0
    m.get_layer("c3").set_weights([w3, b3])
    return m


def _types(blob: bytes, model) -> dict[str, list[str]]:
    """Per Keras layer: the dtypes of the tensors its ops write in ``blob``."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edgekit.layer_error import layer_ops

    it = Interpreter(model_content=blob, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    by_name = {t["name"]: np.dtype(t["dtype"]).name for t in it.get_tensor_details()}
    return {layer: [by_name[n] for n in v["tensors"]] for layer, v in layer_ops(model, blob).items()}


# ----------------------------------------------------------------------------- through a whole run

RECIPE = """
name: selective
seed: 0
data: {source: digits}
teacher: {model: sensitive.keras, epochs: 0}
student: {model: sensitive.keras, epochs: 0}
prune: null
qat: null
convert: {selective: auto}
quality: {max_accuracy_drop: 3.0}
targets: [phone.yaml, cortex-m4]
evaluate: {warmup: 1, runs: 5}
"""


@pytest.fixture(scope="module")
def selective_run(tmp_path_factory):
    from edgekit.pipeline import Run
    from edgekit.recipe import load_recipe

    folder = tmp_path_factory.mktemp("selective")
    sensitive_model().save(folder / "sensitive.keras")
    # the mobile profile with its int8 model only (no fp16 or ONNX to make and measure)
    (folder / "phone.yaml").write_text((ROOT / "targets" / "mobile.yaml").read_text()
                                       .replace("formats: [tflite-int8, tflite-fp16, onnx]", "formats: [tflite-int8]")
                                       .replace("name: mobile", "name: phone"))
    recipe = folder / "selective.yaml"
    recipe.write_text(RECIPE)
    report = Run(load_recipe(recipe), recipe, folder / "run").execute()
    return folder / "run", report


@pytest.mark.slow  # a whole run (its choice and gate are tested in-process below)
def test_auto_keeps_the_sensitive_layer_and_the_gate_then_holds(selective_run):
    out, report = selective_run
    by = {t["name"]: t for t in report["targets"]}
    for name, precision in (("phone", "float"), ("cortex-m4", "int16")):
        t = by[name]
        pl = t["per_layer_error"]
        assert pl["split"] == "val" and pl["samples"] > 100 and pl["worst"][0] == "c3", pl["worst"]
        s = t["selective_precision"]
        assert s["status"] == "met" and s["precision"] == precision
        kept = {r["layer"]: r["precision"] for r in s["layers"]}
        assert "c2" in kept and set(kept.values()) == {precision}, kept
        # both models measured by the evaluator on the test split: int8 fails the gate, selective holds it
        assert t["quality"]["ok"] is False and s["int8"]["quality_ok"] is False
        sel = next(v for v in t["variants"] if v["file"] == "model_selective.tflite")
        assert sel["quality"]["ok"] is True and s["selective"]["quality_ok"] is True
        assert s["selective"]["accuracy"] == sel["accuracy"] > t["accuracy"] + 0.1
        # what it cost, in measured file bytes
        files = out / "targets" / name
        assert s["int8"]["size_bytes"] == (files / s["int8"]["file"]).stat().st_size
        assert s["selective"]["size_bytes"] == (files / "model_selective.tflite").stat().st_size
        assert s["cost_bytes"] == s["selective"]["size_bytes"] - s["int8"]["size_bytes"]
        assert s["cost_bytes_vs_same_quantizer"] > 0
        print(f"{name}: int8 {t['accuracy']:.4f} ({s['int8']['size_bytes']} B) -> selective {sel['accuracy']:.4f} "
              f"({s['selective']['size_bytes']} B), kept {kept}, cost vs same quantizer "
              f"{s['cost_bytes_vs_same_quantizer']} B")
    m4 = next(v for v in by["cortex-m4"]["variants"] if v["file"] == "model_selective.tflite")
    assert m4["format"] == "tflite-full-selective" and m4["runtime"]["name"] == "tflite_micro" and m4["arena_bytes"]
    # what to ship: the selective model (the int8 one fails the gate); on the MCU its own C array and op resolver
    from edgekit.mcu import read_c_array

    assert report["ship"]["phone"]["format"] == "tflite-selective"
    rec = report["ship"]["cortex-m4"]
    assert rec["format"] == "tflite-full-selective"
    assert "targets/cortex-m4/model_selective/model_data.cc" in rec["files"], rec["files"]
    assert "targets/cortex-m4/model_selective/op_resolver.h" in rec["files"]
    sel_cc = out / "targets" / "cortex-m4" / "model_selective" / "model_data.cc"
    assert read_c_array(sel_cc) == (out / "targets" / "cortex-m4" / "model_selective.tflite").read_bytes()


@pytest.mark.slow  # a whole run (its choice and gate are tested in-process below)
def test_the_mcu_model_is_integer_with_int16_only_where_tflm_has_the_kernel(selective_run):
    from edgekit.convert import check_integer_only
    from edgekit.fitting import load_model
    from edgekit.mcu import TFLM_INT16X8_OPS
    from edgekit.selective import higher_precision_ops

    out, report = selective_run
    blob = (out / "targets" / "cortex-m4" / "model_selective.tflite").read_bytes()
    info = check_integer_only(blob, require_int_io=True)  # raises on a float op or float I/O
    assert info["input"] == info["output"] == "int8"
    int16 = higher_precision_ops(blob, "int16")
    assert "CONV_2D" in int16 and set(int16) <= TFLM_INT16X8_OPS
    types_ = _types(blob, load_model(out / "stages" / "student" / "model.keras"))
    kept = [r["layer"] for r in next(t for t in report["targets"] if t["name"] == "cortex-m4")
            ["selective_precision"]["layers"]]
    for layer, dtypes in types_.items():
        assert set(dtypes) == ({"int16"} if layer in kept else {"int8"}), (layer, dtypes)


@pytest.mark.slow  # a whole run (its choice and gate are tested in-process below)
def test_report_pages_show_the_per_layer_table_plot_and_the_choice(selective_run):
    from test_report import chromium_dom, html_tables, md_tables

    from edgekit.report.fmt import fmt_bytes

    out, report = selective_run
    md = (out / "report.md").read_text()
    assert "## Per-layer quantization error" in md and "worst layers" in md and "## Selective precision" in md
    sel_rows = {r[0]: r for r in md_tables(md)["Selective precision"]}
    for t in report["targets"]:
        s = t["selective_precision"]
        assert fmt_bytes(s["selective"]["size_bytes"]) in sel_rows[t["name"]]
        assert f"+{fmt_bytes(s['cost_bytes'])}" in sel_rows[t["name"]]
    page = html_tables(chromium_dom(out / "report.html"))
    check = json.loads(page.selfcheck)
    assert check["ok"] is True, check
    plots = [f for f in check["figures"] if f["label"].startswith("Per-layer int8 error")]
    assert len(plots) == 2 and all(f["width"] > 100 and f["height"] > 50 for f in plots)  # phone, cortex-m4
    layer_tables = [v for k, v in page.tables.items() if k.startswith("per-layer-")]
    assert len(layer_tables) == 2
    for rows in layer_tables:
        cells = {key: row for key, row in rows}
        assert list(cells) == ["c1", "c2", "c3", "flat", "logits"]
        assert cells["c2"][-1] in ("float", "int16") and cells["c1"][-1] in ("int8", "float", "int16")
    assert {key for key, _ in page.tables["selective"]} == {"phone", "cortex-m4"}
    html = (out / "report.html").read_text()
    assert "<img" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    # `edgekit report RUN` renders the same from the manifest again (nothing applied twice)
    from click.testing import CliRunner

    from edgekit.cli import main

    res = CliRunner().invoke(main, ["report", str(out), "--recipe", str(out.parent / "selective.yaml"), "--no-budget"])
    assert res.exit_code == 0, res.output
    again = json.loads((out / "report.json").read_text())
    for a, b in zip(report["targets"], again["targets"]):
        assert a["selective_precision"] == b["selective_precision"] and a["per_layer_error"] == b["per_layer_error"]
        assert [v["file"] for v in a["variants"]] == [v["file"] for v in b["variants"]]
        assert not any("per_layer_error" in v for v in b["variants"])


# ----------------------------------------------------------------------------- kernel support decides before building


def test_an_mcu_never_gets_a_layer_without_a_tflm_int16_kernel(tmp_path):
    """``c3`` ends in hard-swish (a HARD_SWISH op): TFLite Micro has no int16x8 kernel for it as the
    quantizer writes it, so on an MCU it is refused before any model is built and stays int8 in
    whatever ships; a phone keeps it float."""
    from edgekit import selective, targets
    from edgekit.convert import Artifact, KerasSource, check_integer_only
    from edgekit.mcu import TFLM_INT16X8_OPS
    from edgekit.recipe import ConvertConfig

    from edgekit._tf import keras

    k = keras()

    def hard_swish(v):
        return v * k.activations.relu(v + 3.0, max_value=6.0) / 6.0

    m = sensitive_model(hard_swish)
    x, y = _digits()
    data = types.SimpleNamespace(x_train=x[:1200], y_train=y[:1200], x_val=x[1200:1500], y_val=y[1200:1500],
                                 x_test=x[1500:], y_test=y[1500:], task="classification")
    cfg = ConvertConfig(selective="auto", per_layer_samples=200)
    chosen = {}
    cache: dict = {}  # one run's conversions, as convert_target shares them between targets
    for kind, mode, fmt in (("mcu", "full-int8", "tflite-full-int8"), ("mobile", "int8", "tflite-int8")):
        folder = tmp_path / kind
        folder.mkdir()
        source = KerasSource({"float": m, "qat": None}, data, cfg, 0, cache=cache)
        path = folder / "model_int8.tflite"
        path.write_bytes(source.tflite(mode, signature=kind != "mcu"))  # as each kind makes its file
        art = Artifact(path, fmt, "x", {})
        more = selective.for_target(source, targets.get(kind), targets.ConvertContext(data, cfg, folder, path, 3.0), art)
        record = art.extra["selective_precision"]
        chosen[kind] = (record, more)
    mcu, more = chosen["mcu"]
    refused = {r["layer"]: r for r in mcu["refused"]}
    assert "c3" in refused and "HARD_SWISH" in refused["c3"]["reason"] and "HARD_SWISH" in refused["c3"]["ops"]
    assert "c3" not in {r["layer"] for r in mcu["layers"]}
    assert all(set(t["layers"]).isdisjoint({"c3"}) for t in mcu["tried"])  # never even built with it
    if more:
        blob = more[0].path.read_bytes()
        check_integer_only(blob, require_int_io=True)
        assert set(selective.higher_precision_ops(blob, "int16")) <= TFLM_INT16X8_OPS
        assert set(_types(blob, m)["c3"]) == {"int8"}
    mobile, _ = chosen["mobile"]
    assert mobile["refused"] == [] and "c3" in {r["layer"] for r in mobile["layers"]}
    assert mobile["status"] == "met"


# ----------------------------------------------------------------------------- the recipe key, the kernel table


@pytest.mark.parametrize("extra, fragment", [
    ("convert: {selective: auto}\n", "set quality: {max_accuracy_drop: POINTS}"),
    ("convert: {selective: auto, per_layer_samples: 0}\nquality: {max_accuracy_drop: 1}\n", "per_layer_samples above 0"),
    ("task: regression\ndata: {source: fermentation}\nconvert: {selective: auto}\nquality: {max_accuracy_drop: 1}\n",
     "task classification"),
    ("convert: {selective: always}\n", "convert.selective"),
])
def test_recipe_refuses_selective_without_what_it_needs(tmp_path, extra, fragment):
    from edgekit.errors import RecipeError
    from edgekit.recipe import load_recipe

    p = tmp_path / "r.yaml"
    p.write_text("name: r\n" + extra)
    with pytest.raises(RecipeError) as exc:
        load_recipe(p)
    assert fragment in str(exc.value) and "r.yaml" in str(exc.value)


def test_selective_is_off_by_default_and_keeps_old_convert_fingerprints(tmp_path):
    from edgekit.pipeline import Run
    from edgekit.recipe import ConvertConfig, load_recipe

    assert ConvertConfig().selective == "off" and ConvertConfig().per_layer_samples == 200
    p = tmp_path / "r.yaml"
    p.write_text("name: r\nprune: null\nqat: null\ntargets: [cortex-m4]\n")
    conf = Run(load_recipe(p), p, tmp_path / "run")._convert_config()
    assert "selective" not in conf and "per_layer_samples" not in conf and "quality" not in conf
    p.write_text("name: r\nprune: null\nqat: null\ntargets: [cortex-m4]\nconvert: {selective: auto}\n"
                 "quality: {max_accuracy_drop: 2}\n")
    conf = Run(load_recipe(p), p, tmp_path / "run2")._convert_config()
    assert conf["selective"] == "auto" and conf["quality"] == {"max_accuracy_drop": 2.0}


def test_tflm_int16x8_table_runs_in_tflite_micro(tmp_path):
    """Every op of :data:`edgekit.mcu.TFLM_INT16X8_OPS` but TRANSPOSE_CONV (its output-shape ops stay
    float in a Keras model with a dynamic batch), quantized 16x8 by
    litert-quantizer in one model, writes int16 and runs in the tflite-micro interpreter; an op
    left out (HARD_SWISH) stays float in such a model."""
    import subprocess
    import sys

    from ai_edge_litert.interpreter import Interpreter

    from edgekit._tf import keras
    from edgekit.convert import to_tflite
    from edgekit.external.quantize import quantize_tflite
    from edgekit.mcu import TFLM_INT16X8_OPS
    from edgekit.selective import higher_precision_ops

    k = keras()
    L = k.layers
    k.utils.set_random_seed(0)
    inp = L.Input((8, 8, 2))
    a = L.Conv2D(4, 3, padding="same", activation="relu")(inp)
    b = L.DepthwiseConv2D(3, padding="same")(inp)
    c = L.Concatenate()([a, L.ZeroPadding2D(0)(b), L.UpSampling2D()(L.MaxPooling2D()(a))])
    d = L.Multiply()([L.Activation("sigmoid")(L.ReLU()(c)), L.Activation("tanh")(c)])
    e = L.Add()([L.AveragePooling2D()(d), L.MaxPooling2D()(d)])
    f = L.Dense(6)(L.Flatten()(L.ZeroPadding2D(1)(e)))
    g = L.Concatenate()([L.Softmax()(f), L.Dense(3)(L.GlobalAveragePooling2D()(e)),
                         L.Dense(2, activation=lambda v: v * k.activations.relu(v + 3.0, max_value=6.0) / 6.0)(f)])
    model = k.Model(inp, g)
    blob = to_tflite(model, mode="float32")
    sigs = Interpreter(model_content=blob).get_signature_list()
    sig = next(iter(sigs))
    x = np.random.default_rng(0).normal(size=(8, 8, 8, 2)).astype("float32")
    q = quantize_tflite(blob, "full-int16x8", signature=sig, signature_input=sigs[sig]["inputs"][0],
                        calibration=[x[i:i + 1] for i in range(8)])
    int16 = set(higher_precision_ops(q, "int16"))
    assert int16 <= TFLM_INT16X8_OPS
    assert TFLM_INT16X8_OPS - int16 == {"TRANSPOSE_CONV"}, TFLM_INT16X8_OPS - int16
    assert "HARD_SWISH" in higher_precision_ops(q, "float")  # left float: not in the table
    path = tmp_path / "m.tflite"
    path.write_bytes(q)
    code = ("import numpy as np, sys\nfrom tflite_micro.python.tflite_micro import runtime\n"
            "it = runtime.Interpreter.from_file(sys.argv[1], arena_size=200000)\nd = it.get_input_details(0)\n"
            "it.set_input(np.ones(d['shape'], d['dtype']), 0)\nit.invoke()\n"
            "print('OK', np.dtype(it.get_output_details(0)['dtype']).name)")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.split() == ["OK", "int16"], proc.stderr[-2000:]


@pytest.mark.parametrize("mode, precision", [("int8", "float"), ("full-int8", "int16")])
def test_layer_scoped_rules_keep_exactly_the_named_layer_even_the_first(mode, precision):
    """The first layer kept float (litert-quantizer's calibrator records no ranges then: edgekit
    calibrates with the plain recipe) or int16; every other layer stays int8."""
    from ai_edge_litert.interpreter import Interpreter

    from edgekit._tf import keras
    from edgekit.convert import to_tflite
    from edgekit.external.quantize import quantize_tflite
    from edgekit.layer_error import layer_ops
    from edgekit.selective import _regex

    k = keras()
    L = k.layers
    k.utils.set_random_seed(0)
    m = k.Sequential([L.Input((8, 8, 1)), L.Conv2D(4, 3, activation="relu", name="c1"),
                      L.Conv2D(4, 3, activation="relu", name="c1b"), L.Flatten(name="flat"), L.Dense(3, name="out")])
    blob = to_tflite(m, mode="float32")
    sigs = Interpreter(model_content=blob).get_signature_list()
    sig = next(iter(sigs))
    x = np.random.default_rng(0).random((8, 8, 8, 1)).astype("float32")
    q = quantize_tflite(blob, mode, signature=sig, signature_input=sigs[sig]["inputs"][0],
                        calibration=[x[i:i + 1] for i in range(8)],
                        keep={_regex(layer_ops(m, blob)["c1"]["tensors"]): precision})
    want = "float32" if precision == "float" else "int16"
    got = _types(q, m)
    assert got["c1"] == [want] and got["c1b"] == ["int8"] and got["out"] == ["int8"], got  # "c1" is no prefix of "c1b"
