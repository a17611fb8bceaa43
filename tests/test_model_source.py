"""Model references in recipes (zoo name | model file | SavedModel folder | FILE.py:FUNCTION |
float .tflite/.onnx), parsed without TensorFlow, with every bad reference one line naming the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.errors import RecipeError
from edgekit.model_source import absolute_model, classify, parse_model_ref
from edgekit.recipe import load_recipe, with_model_paths


@pytest.fixture()
def folder(tmp_path):
    (tmp_path / "m.keras").write_bytes(b"zip")
    (tmp_path / "m.h5").write_bytes(b"h5")
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"pb")
    (tmp_path / "my_models.py").write_text("def build(s, n, w):\n    return None\n")
    (tmp_path / "f.tflite").write_bytes(b"tfl")
    (tmp_path / "f.onnx").write_bytes(b"onnx")
    (tmp_path / "weights.bin").write_bytes(b"w")
    return tmp_path


@pytest.mark.parametrize("value,kind,name,function", [
    ("cnn_small", "zoo", None, None),
    ("zoo:mlp_tiny", "zoo", None, None),
    ("m.keras", "keras", "m.keras", None),
    ("./m.h5", "keras", "m.h5", None),
    ("keras:m.keras", "keras", "m.keras", None),
    ("sm", "savedmodel", "sm", None),
    ("./sm", "savedmodel", "sm", None),
    ("savedmodel:sm", "savedmodel", "sm", None),
    ("my_models.py:build", "builder", "my_models.py", "build"),
    ("py:my_models.py:build", "builder", "my_models.py", "build"),
    ("f.tflite", "tflite", "f.tflite", None),
    ("tflite:f.tflite", "tflite", "f.tflite", None),
    ("f.onnx", "onnx", "f.onnx", None),
    ("onnx:f.onnx", "onnx", "f.onnx", None),
])
def test_every_kind_parses_relative_to_the_recipe(folder, monkeypatch, value, kind, name, function):
    monkeypatch.chdir(folder.parent)  # the working directory is not the recipe's folder
    ref = parse_model_ref(value, folder)
    assert (ref.kind, ref.function) == (kind, function)
    if name is None:
        assert ref.path is None
    else:
        assert ref.path.resolve() == (folder / name).resolve()
        again = parse_model_ref(absolute_model(value, folder), None)  # a copy of the recipe elsewhere
        assert (again.kind, again.path, again.function) == (kind, ref.path.resolve(), function)


@pytest.mark.parametrize("value,fragment", [
    ("cnn_smal", "unknown model 'cnn_smal'; did you mean 'cnn_small'?"),
    ("nope.keras", "nope.keras: no such keras model file (relative to"),
    ("nope/", "no such SavedModel folder"),
    ("gone.py:build", "gone.py: no such builder file"),
    ("my_models.py", "FILE.py:FUNCTION"),
    ("py:my_models.py", "py: takes FILE.py:FUNCTION"),
    ("weights.bin", "not a SavedModel folder"),
])
def test_bad_references_name_the_problem(folder, value, fragment):
    with pytest.raises(RecipeError, match=None) as info:
        parse_model_ref(value, folder)
    assert fragment in str(info.value)


def test_plain_folder_is_not_a_savedmodel(folder):
    (folder / "empty").mkdir()
    with pytest.raises(RecipeError, match="not a SavedModel folder"):
        parse_model_ref("empty", folder)


def test_symlink_out_of_the_recipe_folder_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.keras").write_bytes(b"zip")
    rec = tmp_path / "rec"
    rec.mkdir()
    os.symlink(outside / "secret.keras", rec / "m.keras")
    with pytest.raises(RecipeError, match="leads through a symlink"):
        parse_model_ref("m.keras", rec)
    # the same file named by its absolute path is the user's own choice
    assert parse_model_ref(str(outside / "secret.keras"), rec).kind == "keras"


def _recipe(folder: Path, text: str) -> Path:
    p = folder / "r.yaml"
    p.write_text("name: r\n" + text)
    return p


@pytest.mark.parametrize("text,fragment", [
    ("teacher: {model: cnn_small, epochs: 0}\n",
     "teacher.epochs: 0 means 'use the given model as it is', but 'cnn_small' is an untrained zoo model"),
    ("teacher: null\nstudent: {model: my_models.py:build, epochs: 0}\n", "student.epochs: 0 means"),
    ("teacher: null\nstudent: null\n", "teacher and student are both null"),
    ("teacher: {model: f.tflite, epochs: 0}\n", "teacher.model: 'f.tflite' is an already converted float tflite"),
    ("teacher: null\nstudent: {model: f.onnx, epochs: 0}\n", "only as student.model with teacher: null, prune: null"),
    ("teacher: null\nstudent: {model: f.onnx, epochs: 3}\nprune: null\nqat: null\n", "and epochs: 0"),
    ("teacher: {model: missing.keras, epochs: 0}\n", "teacher.model: missing.keras: no such keras model file"),
    ("student: {model: nope_net}\n", "student.model: unknown model 'nope_net'"),
])
def test_recipe_model_rules(folder, text, fragment):
    with pytest.raises(RecipeError) as info:
        load_recipe(_recipe(folder, text))
    msg = str(info.value)
    assert msg.startswith(str(folder / "r.yaml") + ": "), msg
    assert fragment in msg, msg
    assert "\n" not in msg


def test_given_models_are_accepted(folder):
    r = load_recipe(_recipe(folder, "teacher: {model: m.keras, epochs: 0}\nstudent: null\n"))
    assert r.teacher.model == "m.keras" and r.student is None
    r = load_recipe(_recipe(folder, "teacher: null\nstudent: {model: f.tflite, epochs: 0}\nprune: null\nqat: null\n"))
    assert r.teacher is None
    r = load_recipe(_recipe(folder, "teacher: null\nstudent: {model: sm, epochs: 0}\n"))  # a SavedModel folder
    assert r.student.model == "sm"
    r = load_recipe(_recipe(folder, "teacher: {model: my_models.py:build, epochs: 2}\n"))
    moved = with_model_paths(r, folder)
    assert moved.teacher.model == f"py:{(folder / 'my_models.py').resolve()}:build"
    assert moved.student.model == "cnn_tiny"


def test_model_references_need_no_tensorflow(folder):
    code = ("import sys; from edgekit.recipe import load_recipe; "
            f"load_recipe({str(_recipe(folder, 'teacher: {model: m.keras, epochs: 0}' + chr(10)))!r}); "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
