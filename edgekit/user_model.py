"""A user's own model as a tf_keras model: a saved Keras file (tf_keras or Keras 3), a Keras
SavedModel folder, or a builder function in a Python file.

The pipeline trains, prunes and quantizes with tf_keras (tensorflow-model-optimization takes no
Keras 3 model), so:

- a tf_keras ``.keras`` / ``.h5`` file or Keras SavedModel is loaded with tf_keras (``safe_mode``
  on for ``.keras``);
- a Keras 3 file (``keras_version`` 3.x in its metadata) is loaded by Keras 3 in a child process
  (:mod:`edgekit._keras3`, without ``TF_USE_LEGACY_KERAS``), which writes its config, weights and
  its outputs on samples of the recipe's data; the model is rebuilt here from the config with
  built-in tf_keras layers, the weights copied, and its outputs must equal Keras 3's within
  :data:`TOLERANCE` or it is refused;
- a builder ``FILE.py:FUNCTION`` is imported from its file and called as
  ``FUNCTION(input_shape, num_outputs, width)``: this runs the user's code.

Custom objects (layers, activations... that are not built into Keras) are refused with one error
naming them. :func:`open_in_child` does all of this in a child process (``python -m
edgekit.user_model``), so a crash while opening a user's file is one line (exit 7), and writes
the tf_keras model as ``.keras`` plus what it found (``info.json``).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError, EdgekitError, ModelError, RecipeError
from .model_source import ModelRef, classify, parse_model_ref, sha256_of

log = logging.getLogger(__name__)

TOLERANCE = 1e-5
"""Largest difference allowed between a Keras 3 model's outputs and its tf_keras rebuild
(absolute, and relative to the output's size: ``|a - b| <= TOLERANCE * (1 + |a|)``)."""
SAMPLE_ROWS = 256
_MODEL_CLASSES = {"Functional", "Sequential", "Model"}


# ----------------------------------------------------------------------------- inspection (no TF)


def keras_version(path: Path) -> str | None:
    """The ``keras_version`` a ``.keras`` / ``.h5`` file was saved with (None: unknown)."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                if "metadata.json" in z.namelist():
                    return json.loads(z.read("metadata.json")).get("keras_version")
            return None
        import h5py

        with h5py.File(path, "r") as f:
            v = f.attrs.get("keras_version")
            return v.decode() if isinstance(v, bytes) else (str(v) if v is not None else None)
    except (OSError, ValueError, KeyError):
        return None


def file_config(path: Path) -> dict | None:
    """The model config stored in a ``.keras`` zip or ``.h5`` file (None: none found)."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                return json.loads(z.read("config.json")) if "config.json" in z.namelist() else None
        import h5py

        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
            return json.loads(raw.decode() if isinstance(raw, bytes) else raw) if raw is not None else None
    except (OSError, ValueError, KeyError):
        return None


def _known_class(name: str) -> bool:
    from ._tf import keras

    k = keras()
    return (name in _MODEL_CLASSES or hasattr(k.layers, name) or hasattr(k.initializers, name)
            or hasattr(k.regularizers, name) or hasattr(k.constraints, name) or name in
            ("DTypePolicy", "FloatDTypePolicy", "Policy", "__keras_tensor__", "__tuple__", "function",
             "__numpy__", "__tensor__", "__bytes__", "__ellipsis__", "__slice__", "__typespec__", "__lambda__"))


def custom_objects(config: Any) -> list[str]:
    """Class names in a model config that are not built into Keras (custom layers, activations,
    initializers...), and ``Lambda`` layers (their Python code is refused by ``safe_mode``)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            cn = node.get("class_name")
            if isinstance(cn, str):
                reg = node.get("registered_name")
                module = node.get("module")
                custom = (isinstance(reg, str) and reg and reg != cn) or (
                    isinstance(module, str) and not module.startswith(("keras", "tf_keras", "builtins")))
                if custom or cn == "Lambda" or not _known_class(cn):
                    found.append(cn if cn != "Lambda" else f"Lambda ({node.get('config', {}).get('name', '?')})")
            for key, v in node.items():
                if key not in ("compile_config", "training_config"):  # how it was trained: not loaded
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(config)
    return sorted(dict.fromkeys(found))


def _refuse_custom(path: Path, names: list[str]) -> None:
    if names:
        raise ModelError(f"{path}: the model uses objects that are not built into Keras: {', '.join(names)}; "
                         "edgekit loads built-in layers only (Keras safe_mode stays on): rebuild it from built-in "
                         "layers, or give its architecture as a builder (model: FILE.py:FUNCTION)")


# ----------------------------------------------------------------------------- loading (in the child)


def load(ref: ModelRef, *, sample: np.ndarray | None = None, input_shape: tuple | None = None,
         num_outputs: int | None = None, width: float = 1.0, work_dir: Path | None = None):
    """The tf_keras model ``ref`` names, and what was found: ``{"format", "keras_version",
    "converted_from_keras3", "max_abs_diff"}``. ``sample`` (inputs of the recipe's data) proves a
    Keras 3 rebuild; a builder is called with ``input_shape``, ``num_outputs`` and ``width``."""
    if ref.kind == "builder":
        model, inlined = flatten(build(ref, input_shape=input_shape, num_outputs=num_outputs, width=width))
        return model, {"format": "builder", **({"flattened": inlined} if inlined else {})}
    from ._tf import keras

    k = keras()
    path = Path(ref.path)
    if ref.kind == "savedmodel":
        if not (path / "keras_metadata.pb").is_file():
            raise ModelError(f"{path}: a SavedModel without Keras metadata (written by tf.saved_model.save or Keras "
                             "3's model.export) cannot be trained or pruned; save the Keras model with "
                             "model.save('model.keras'), or convert it to a float .tflite and give that")
        try:
            model = k.models.load_model(str(path), compile=False)
        except Exception as exc:  # noqa: BLE001 - TensorFlow's loading errors vary
            raise ModelError(f"{path}: tf_keras cannot load this SavedModel: {_line(exc)}") from None
        revived = sorted({type(layer).__name__ for layer in _all_layers(model)
                          if not _known_class(type(layer).__name__)})
        _refuse_custom(path, revived)
        model, inlined = flatten(model)
        return model, {"format": "savedmodel", "keras_version": None, **({"flattened": inlined} if inlined else {})}
    if ref.kind != "keras":
        raise ModelError(f"{path}: a {ref.kind} model is not a Keras model")
    version = keras_version(path)
    config = file_config(path)
    if config is None:
        raise ModelError(f"{path}: not a Keras model file (no model config inside); save it with "
                         "model.save('model.keras')")
    _refuse_custom(path, custom_objects(config))
    if version and version.split(".")[0] == "3":
        if sample is None:
            raise ModelError(f"{path}: a Keras 3 model needs data samples to prove its tf_keras rebuild")
        model, diff = rebuild_keras3(path, sample, work_dir=work_dir)
        model, inlined = flatten(model)
        return model, {"format": "keras3", "keras_version": version, "converted_from_keras3": True,
                       "max_abs_diff": diff, **({"flattened": inlined} if inlined else {})}
    try:
        if zipfile.is_zipfile(path):
            model = k.models.load_model(str(path), compile=False, safe_mode=True)
        else:
            model = k.models.load_model(str(path), compile=False)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"{path}: tf_keras cannot load it: {_line(exc)}") from None
    model, inlined = flatten(model)
    return model, {"format": "h5" if not zipfile.is_zipfile(path) else "keras", "keras_version": version,
                   **({"flattened": inlined} if inlined else {})}


_NOT_FLATTENED = {"Lambda"}  # a Python function: not rebuilt from its config with safe_mode on


def flatten(model):
    """``(flat, names)``: ``model`` with every nested model (a ``keras.applications`` backbone, a
    Sequential block) replaced by its layers, called directly, and the names of the nested models
    inlined; ``(model, [])`` when it nests none or cannot be flattened (a ``Lambda`` layer anywhere,
    a nested model without a graph). Every layer's call is replayed as recorded (a TF-op layer's
    constants and options included). Every layer is a fresh copy holding the original's
    weights; a layer name used twice gets its nested model's name as a prefix; a nested model
    called with ``training=False`` (a frozen backbone) keeps its BatchNorm layers in inference mode
    (``trainable=False``). The flat model must compute what the nested one does (checked on random
    inputs, 1e-5); otherwise the model is returned unchanged. Quantization-aware training, pruning
    and structured pruning take flat models only."""
    from ._tf import keras, tf

    k = keras()
    if not any(isinstance(layer, k.Model) for layer in model.layers):
        return model, []
    leaves = [layer for layer in _all_layers(model) if not isinstance(layer, k.Model)]
    if any(type(layer).__name__ in _NOT_FLATTENED for layer in leaves) or not hasattr(model, "_nodes_by_depth"):
        return model, []
    nested: list[str] = []
    # the model's own layers keep their names; a nested one whose name is taken gets its model's as a prefix
    used = {layer.name for layer in model.layers if not isinstance(layer, k.Model)}

    def clone(layer, prefix: str, frozen: bool):
        cfg = layer.get_config()
        name = cfg.get("name", layer.name)
        if prefix:
            if name in used:
                name = f"{prefix}_{name}"
                while name in used:
                    name += "_"
            used.add(name)
        cfg["name"] = name
        new = type(layer).from_config(cfg)
        if frozen and isinstance(layer, k.layers.BatchNormalization):
            new.trainable = False  # Keras 2: a frozen BatchNorm runs in inference mode, as training=False did
        return new

    def call_graph(m, inputs: list, prefix: str, frozen: bool) -> list:
        if not hasattr(m, "_nodes_by_depth"):
            raise ValueError(f"{m.name} has no graph")
        tensors = {id(t): x for t, x in zip(m.inputs, inputs)}

        def mapped(v):  # a recorded call's arguments with the new graph's tensors in place of the old
            return tf().nest.map_structure(lambda t: tensors.get(id(t), t), v)

        for depth in sorted(m._nodes_by_depth, reverse=True):  # noqa: SLF001 - the graph, inputs first
            for node in m._nodes_by_depth[depth]:  # noqa: SLF001
                layer = node.layer
                if isinstance(layer, k.layers.InputLayer):
                    continue
                if isinstance(layer, k.Model):
                    nested.append(layer.name)
                    ins = [tensors[id(t)] for t in tf().nest.flatten(node.input_tensors)]
                    training = (getattr(node, "call_kwargs", None) or {}).get("training")
                    outs = call_graph(layer, ins, layer.name, frozen or training is False)
                else:  # the node's own call replayed (a TF-op layer's constants and options kept)
                    new = clone(layer, prefix, frozen)
                    out = new(*mapped(list(node.call_args)), **mapped(dict(node.call_kwargs)))
                    new.set_weights(layer.get_weights())
                    outs = tf().nest.flatten(out)
                for t, x in zip(tf().nest.flatten(node.output_tensors), outs):
                    tensors[id(t)] = x
        return [tensors[id(t)] for t in m.outputs]

    try:
        inputs = [k.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name.split(":")[0].split("/")[0])
                  for t in model.inputs]
        outs = call_graph(model, inputs, "", False)
        flat = k.Model(inputs if len(inputs) > 1 else inputs[0], outs if len(outs) > 1 else outs[0], name=model.name)
        rng = np.random.default_rng(0)
        x = [rng.random((4, *[d or 1 for d in t.shape[1:]]), dtype=np.float32) for t in model.inputs]
        x = x[0] if len(x) == 1 else x
        want, got = tf().nest.flatten(model(x, training=False)), tf().nest.flatten(flat(x, training=False))
        if not all(np.allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5) for a, b in zip(want, got)):
            log.warning("the flattened model does not compute what %s does; kept nested", model.name)
            return model, []
    except Exception as exc:  # noqa: BLE001 - a model that cannot be flattened is used as it is (preflight names why)
        log.info("%s kept nested: %s", model.name, _line(exc))
        return model, []
    log.info("flattened nested model(s) %s into %s (%d layers)", ", ".join(nested), model.name, len(flat.layers))
    return flat, nested


def _all_layers(model) -> list:
    out = []
    for layer in model.layers:
        out.append(layer)
        if hasattr(layer, "layers"):
            out.extend(_all_layers(layer))
    return out


def _line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:400] + "...") if len(text) > 400 else (text or type(exc).__name__)


def build(ref: ModelRef, *, input_shape, num_outputs, width: float = 1.0):
    """Import ``ref.path`` (a Python file: this runs the user's code) and call
    ``ref.function(input_shape, num_outputs, width)``; any error becomes one :class:`RecipeError`
    naming the file and function."""
    from ._tf import keras

    k = keras()
    where = f"{ref.path}:{ref.function}"
    name = f"edgekit_user_builder_{abs(hash(str(Path(ref.path).resolve())))}"
    try:
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, str(ref.path))
            if spec is None or spec.loader is None:
                raise RecipeError(f"{where}: cannot import {ref.path}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            sys.modules[name] = module
        fn = getattr(module, ref.function, None)
        if not callable(fn):
            found = [n for n, v in vars(module).items() if inspect.isfunction(v) and not n.startswith("_")]
            raise RecipeError(f"{where}: {ref.path.name} has no function {ref.function!r} "
                              f"(functions: {', '.join(found) or 'none'})")
        model = fn(tuple(int(d) for d in input_shape), int(num_outputs), float(width))
    except RecipeError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's code: anything can happen
        sys.modules.pop(name, None)
        raise RecipeError(f"{where}: raised {type(exc).__name__}: {_line(exc)}") from None
    if not isinstance(model, k.Model):
        hint = ""
        if type(model).__module__.startswith("keras"):
            hint = ("; it built a Keras 3 model: in the builder use `import tf_keras as keras` (or `from "
                    "tensorflow import keras`), which is the Keras the pipeline trains with")
        raise RecipeError(f"{where}: returned {type(model).__name__}, not a tf_keras Model{hint}")
    return model


# ----------------------------------------------------------------------------- Keras 3 -> tf_keras


def rebuild_keras3(path: Path, sample: np.ndarray, *, work_dir: Path | None = None):
    """(tf_keras model, largest output difference) for the Keras 3 file ``path``; see the module
    docstring. Raises :class:`ModelError` for layers tf_keras cannot rebuild, weights that do not
    fit, or outputs that differ by more than :data:`TOLERANCE`."""
    with tempfile.TemporaryDirectory(prefix="edgekit-keras3-", dir=work_dir) as tmp:
        tmp_path = Path(tmp)
        np.savez(tmp_path / "sample.npz", x=sample.astype("float32"))
        env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        proc = subprocess.run([sys.executable, "-m", "edgekit._keras3", str(path), str(tmp_path),
                               str(tmp_path / "sample.npz")], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
            if lines and lines[-1].startswith("error: ShapeMismatch: "):
                raise DataError(f"{path}: {lines[-1].removeprefix('error: ShapeMismatch: ')}")
            why = lines[-1].removeprefix("error: ") if lines else f"exit {proc.returncode}: " + \
                " ".join(proc.stderr.split()[-30:])
            raise ModelError(f"{path}: Keras 3 could not load it: {why}")
        config = json.loads((tmp_path / "config.json").read_text())
        with np.load(tmp_path / "weights.npz", allow_pickle=False) as f:
            weights = {key: f[key] for key in f.files}
        expected = np.load(tmp_path / "outputs.npy", allow_pickle=False)
        sample = np.load(tmp_path / "inputs.npy", allow_pickle=False)  # reshaped to the model's input
    model = from_keras3_config(config, path=path)
    _set_weights(model, weights, path)
    got = model(sample.astype("float32"), training=False)
    got = np.asarray(got[0] if isinstance(got, (list, tuple)) else got)
    if got.shape != expected.shape:
        raise ModelError(f"{path}: the tf_keras rebuild gives outputs of shape {got.shape}, Keras 3 {expected.shape}")
    diff = float(np.max(np.abs(got - expected))) if got.size else 0.0
    if not np.all(np.abs(got - expected) <= TOLERANCE * (1 + np.abs(expected))):
        raise ModelError(f"{path}: the tf_keras rebuild of this Keras 3 model computes different outputs "
                         f"(largest difference {diff:.3g} > {TOLERANCE:g} on {len(sample)} samples of the data); "
                         "save the model with tf_keras, or convert it to a float .tflite and give that")
    log.info("%s: Keras 3 model rebuilt as tf_keras; outputs equal within %.2g on %d samples", path.name, diff,
             len(sample))
    return model, diff


_BASE_KW = {"name", "dtype", "trainable", "dynamic", "input_shape", "batch_input_shape", "batch_size",
            "activity_regularizer", "autocast"}


def _plain(value: Any) -> Any:
    """A Keras 3 config value as tf_keras takes it: dtype policies by name, serialized objects
    as ``{class_name, config}``."""
    if isinstance(value, dict):
        if value.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
            return value.get("config", {}).get("name", "float32")
        if "class_name" in value and "config" in value:
            return {"class_name": value["class_name"], "config": _plain(value["config"])}
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _layer_from(spec: dict, path: Path):
    from ._tf import keras

    k = keras()
    cn, name = spec["class_name"], spec.get("config", {}).get("name", "?")
    if cn in _MODEL_CLASSES:  # a nested model: rebuilt as one, called as a layer; load() flattens the result
        return from_keras3_config(spec, path=path)
    cls = getattr(k.layers, cn, None)
    if cls is None or not isinstance(cls, type):
        raise ModelError(f"{path}: layer {name!r} ({cn}) has no tf_keras equivalent")
    allowed = set(_BASE_KW)
    for base in cls.__mro__:
        if base is k.layers.Layer or not isinstance(base.__dict__.get("__init__"), type(_plain)):
            continue
        allowed |= set(inspect.signature(base.__init__).parameters) - {"self", "args", "kwargs"}
    cfg, dropped = {}, []
    for key, value in _plain(spec.get("config", {})).items():
        if key.endswith("_initializer"):
            continue  # the weights are copied; Keras 3 initializers take options tf_keras does not know
        if key not in allowed:
            # a Keras 3-only option: the rebuild's outputs are compared with Keras 3's afterwards
            if value not in (None, False, 0, {}, [], ""):
                dropped.append(f"{key}={value!r}")
            continue
        cfg[key] = value
    if dropped:
        log.info("%s: layer %r (%s): Keras 3 options without a tf_keras equivalent left out: %s", path.name, name,
                 cn, ", ".join(dropped))
    if isinstance(cfg.get("dtype"), str) and cfg["dtype"].startswith("mixed_"):
        cfg["dtype"] = "float32"  # the rebuild computes in float32 (what edgekit converts)
    try:
        return cls.from_config(cfg)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"{path}: layer {name!r} ({cn}) cannot be rebuilt in tf_keras: {_line(exc)}") from None


def _input(spec: dict, k):
    cfg = spec.get("config", {})
    shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
    return k.Input(shape=tuple(shape[1:]), name=cfg.get("name"), dtype=_plain(cfg.get("dtype")) or "float32")


def from_keras3_config(config: dict, *, path: Path):
    """A tf_keras model with the architecture of a serialized Keras 3 ``Sequential`` or
    functional model (built-in layers only; weights not set)."""
    from ._tf import keras

    k = keras()
    cn, body = config.get("class_name"), config.get("config", {})
    if cn == "Sequential":
        specs = body.get("layers", [])
        if specs and specs[0]["class_name"] == "InputLayer":
            inputs, specs = _input(specs[0], k), specs[1:]
        elif body.get("build_input_shape"):
            inputs = k.Input(shape=tuple(body["build_input_shape"][1:]))
        else:
            raise ModelError(f"{path}: a Sequential model without an input shape; build it with keras.Input(...)")
        x = inputs
        for spec in specs:
            x = _layer_from(spec, path)(x)
        return k.Model(inputs, x, name=body.get("name"))
    if cn not in ("Functional", "Model"):
        raise ModelError(f"{path}: a {cn} model (a subclassed model?) has no config edgekit can rebuild; "
                         "build it with the functional API or Sequential")
    made: dict[tuple[str, int], list] = {}
    layers: dict[str, Any] = {}
    pending = []
    for spec in body.get("layers", []):
        name = spec.get("name") or spec["config"]["name"]
        if spec["class_name"] == "InputLayer":
            made[(name, 0)] = [_input(spec, k)]
            continue
        layers[name] = _layer_from(spec, path)
        pending += [(name, i, node) for i, node in enumerate(spec.get("inbound_nodes", []))]

    def history(arg):
        if isinstance(arg, dict) and arg.get("class_name") == "__keras_tensor__":
            yield tuple(arg["config"]["keras_history"])
        elif isinstance(arg, dict):
            for v in arg.values():
                yield from history(v)
        elif isinstance(arg, list):
            for v in arg:
                yield from history(v)

    def tensors(arg):
        if isinstance(arg, dict) and arg.get("class_name") == "__keras_tensor__":
            lname, node, idx = arg["config"]["keras_history"]
            return made[(lname, node)][idx]
        if isinstance(arg, list):
            return [tensors(v) for v in arg]
        if isinstance(arg, dict):
            return {key: tensors(v) for key, v in arg.items()}
        return arg

    while pending:
        progressed = False
        for item in list(pending):
            name, i, node = item
            if not isinstance(node, dict) or "args" not in node:
                raise ModelError(f"{path}: layer {name!r}: an inbound node edgekit cannot read")
            if not all((h[0], h[1]) in made for h in history(node)):
                continue
            args = tensors(node["args"])
            kwargs = {key: v for key, v in tensors(node.get("kwargs", {})).items() if v is not None}
            training = kwargs.pop("training", None)
            if training is False and isinstance(layers[name], k.Model):
                kwargs["training"] = False  # a frozen backbone: flatten() keeps its BatchNorm in inference mode
            out = layers[name](*args, **kwargs)
            made[(name, i)] = list(out) if isinstance(out, (list, tuple)) else [out]
            pending.remove(item)
            progressed = True
        if not progressed:
            raise ModelError(f"{path}: the layer graph cannot be rebuilt (layers {', '.join(p[0] for p in pending)} "
                             "wait on inputs that never come)")

    def ends(spec):
        if spec and isinstance(spec[0], str):
            spec = [spec]
        return [made[(n, node)][idx] for n, node, idx in spec]

    ins, outs = ends(body.get("input_layers")), ends(body.get("output_layers"))
    return k.Model(ins[0] if len(ins) == 1 else ins, outs[0] if len(outs) == 1 else outs, name=body.get("name"))


def _set_weights(model, weights: dict[str, np.ndarray], path: Path) -> None:
    by_layer: dict[str, list] = {}
    for key, value in weights.items():
        lname, _, i = key.rpartition("::")
        by_layer.setdefault(lname, []).append((int(i), value))
    for layer in model.layers:
        given = [v for _, v in sorted(by_layer.pop(layer.name, []), key=lambda t: t[0])]
        own = layer.get_weights()
        if len(given) != len(own) or any(a.shape != b.shape for a, b in zip(given, own)):
            raise ModelError(f"{path}: layer {layer.name!r} ({type(layer).__name__}): Keras 3 weights "
                             f"{[tuple(a.shape) for a in given]} do not fit tf_keras "
                             f"{[tuple(b.shape) for b in own]}")
        if own:
            layer.set_weights(given)
    if by_layer:
        raise ModelError(f"{path}: weights of layers {', '.join(sorted(by_layer))} found no layer in the rebuild")


def strip_softmax(model):
    """``(model, True)`` with a final softmax made linear (edgekit's classifiers output logits;
    the argmax, so the accuracy, is unchanged), or ``(model, False)`` when it ends in no softmax."""
    from ._tf import keras

    k = keras()
    last = model.layers[-1]
    act = getattr(last, "activation", None)
    if isinstance(last, k.layers.Softmax) or (isinstance(last, k.layers.Activation) and
                                              getattr(act, "__name__", "") == "softmax"):
        if len(model.layers) < 2:
            return model, False
        return k.Model(model.inputs, model.layers[-2].output, name=model.name), True
    if act is not None and getattr(act, "__name__", "") == "softmax":
        cfg = last.get_config()
        cfg["activation"] = "linear"
        clone = type(last).from_config(cfg)
        out = clone(last.input)
        clone.set_weights(last.get_weights())
        return k.Model(model.inputs, out, name=model.name), True
    return model, False


# ----------------------------------------------------------------------------- the child process


def _run_child(job_file: Path, env: dict, timeout_s: float | None) -> subprocess.CompletedProcess:
    """Start one probe child (``python -m edgekit.user_model JOB_FILE``); every probe starts here."""
    return subprocess.run([sys.executable, "-m", "edgekit.user_model", str(job_file)],
                          env=env, capture_output=True, text=True, timeout=timeout_s)


def open_job(value: str, out_model: Path, *, sample: np.ndarray, input_shape: tuple, num_outputs: int,
             width: float = 1.0, what: str = "model") -> dict:
    """One model for :func:`open_many`: opened as :func:`open_in_child` opens it."""
    return {"check": "keras", "value": value, "out": str(out_model), "sample": np.asarray(sample, "float32"),
            "input_shape": [int(d) for d in input_shape], "num_outputs": int(num_outputs), "width": float(width),
            "what": what}


def converted_job(path: Path, kind: str, data, *, what: str = "model") -> dict:
    """A float ``.tflite`` / ``.onnx`` model for :func:`open_many`: in the child it is checked as
    :func:`edgekit.external.stage.check_given` checks it, then run once on one sample of ``data``
    (so a file that crashes its runtime crashes the child, not edgekit). Its errors are not
    prefixed with ``what``; ``what`` names it when it crashes."""
    sample = np.concatenate([data.x_val[:1], data.x_test[:1], data.x_train[:1]])[:1]
    return {"check": "converted", "value": str(path), "kind": kind, "sample": np.asarray(sample, "float32"),
            "input_shape": [int(d) for d in data.input_shape], "num_classes": int(data.num_classes),
            "task": str(data.task), "what": what}


def _failure(job: dict, code: int, message: str) -> EdgekitError:
    prefix = "" if job["check"] == "converted" else f"{job['what']}: "
    cls = {RecipeError.exit_code: RecipeError, DataError.exit_code: DataError}.get(code, ModelError)
    return cls(prefix + message)


def _crash(job: dict, proc: subprocess.CompletedProcess) -> ModelError:
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    if lines:
        return ModelError(f"{job['what']}: {lines[-1].removeprefix('error: ')}")
    tail = " ".join(proc.stderr.split()[-25:])
    how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
    return ModelError(f"{job['what']}: opening {job['value']} crashed ({how}): {tail or 'no output'}")


def _batch(jobs: list[dict], timeout_s: float | None) -> tuple[list, subprocess.CompletedProcess | None]:
    """Run ``jobs`` in one child. Returns each job's result (info dict, an :class:`EdgekitError`,
    or None when the child ended before reaching it) and the child's process when it did not
    finish all of them cleanly (None otherwise)."""
    with tempfile.TemporaryDirectory(prefix="edgekit-open-") as tmp:
        tmp_path = Path(tmp)
        specs = []
        for i, job in enumerate(jobs):
            spec = {k: v for k, v in job.items() if k != "sample"}
            spec["sample"] = str(tmp_path / f"sample{i}.npz")
            np.savez(spec["sample"], x=job["sample"])
            if job["check"] == "keras":
                Path(job["out"]).parent.mkdir(parents=True, exist_ok=True)
            specs.append(spec)
        results_file = tmp_path / "results.jsonl"
        (tmp_path / "job.json").write_text(json.dumps({"jobs": specs, "results": str(results_file)}))
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        what = ", ".join(j["value"] for j in jobs)
        try:
            proc = _run_child(tmp_path / "job.json", env, timeout_s)
        except subprocess.TimeoutExpired:
            raise ModelError(f"{jobs[0]['what'] if len(jobs) == 1 else 'models'}: opening {what} took longer than "
                             f"{timeout_s:g} s") from None
        results: list = [None] * len(jobs)
        if results_file.is_file():
            for line in results_file.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a line cut short by the crash
                job = jobs[rec["index"]]
                results[rec["index"]] = rec["info"] if rec["ok"] else _failure(job, rec["exit_code"], rec["message"])
    done = proc.returncode == 0 and all(r is not None for r in results)
    return results, (None if done else proc)


def open_many(jobs: list[dict], *, timeout_s: float | None = None) -> list:
    """Open all ``jobs`` (from :func:`open_job` / :func:`converted_job`) in ONE child process
    (importing TensorFlow once) and return, in order, each one's info (as :func:`open_in_child`
    returns it; ``{}`` for a converted model) or the :class:`EdgekitError` it raised (returned,
    not raised: the caller names the first problem of each recipe). Only when that child crashes
    is each model it did not finish opened again in its own child, so the crash names the file
    that causes it."""
    if not jobs:
        return []
    results, failed = _batch(jobs, timeout_s)
    if failed is None:
        return results
    todo = [i for i, r in enumerate(results) if r is None]
    if len(jobs) > 1:
        log.info("opening %d models in one child ended with exit %s; opening %d of them one by one to find "
                 "the one that crashes", len(jobs), failed.returncode, len(todo))
    for i in todo:
        if len(jobs) == 1:
            one, proc = results, failed
        else:
            one, proc = _batch([jobs[i]], timeout_s)
        results[i] = one[0] if one[0] is not None else _crash(jobs[i], proc)
    return results


def open_in_child(value: str, out_model: Path, *, sample: np.ndarray, input_shape: tuple, num_outputs: int,
                  width: float = 1.0, what: str = "model", timeout_s: float | None = None) -> dict:
    """Open the model ``value`` names in a child process (``python -m edgekit.user_model``), which
    writes it as a tf_keras ``.keras`` file to ``out_model``; returns what it found (:func:`load`'s
    info plus ``input_shape``, ``output_shape``, ``layers``, ``params``). An error, or a crash, of
    the child is one :class:`ModelError` (or the child's :class:`RecipeError`) naming ``what``.
    Several models: :func:`open_many` (one child for all)."""
    (result,) = open_many([open_job(value, out_model, sample=sample, input_shape=input_shape,
                                    num_outputs=num_outputs, width=width, what=what)], timeout_s=timeout_s)
    if isinstance(result, EdgekitError):
        raise result
    return result


def check_given_models(recipes: list) -> list[EdgekitError | None]:
    """For each ``(recipe, path)``, the first problem with the models it gives (files, SavedModels,
    builders, float ``.tflite``/``.onnx``) or with its data, prefixed with the recipe's file; None
    when there is none. All the recipes' models are opened in ONE child (:func:`open_many`);
    ``edgekit recipes validate`` calls this."""
    problems: list[EdgekitError | None] = [None] * len(recipes)
    plans = []  # (index, path, data, [(key, job)])
    for i, (rec, path) in enumerate(recipes):
        try:
            plan = _given_jobs(rec, Path(path))
        except EdgekitError as exc:
            problems[i] = type(exc)(f"{path}: {exc}")
            continue
        if plan is not None:
            plans.append((i, path, *plan))
    jobs = [job for *_, pairs in plans for _, job in pairs]
    if not jobs:
        return problems
    with tempfile.TemporaryDirectory(prefix="edgekit-validate-") as tmp:
        for n, job in enumerate(jobs):
            if job["check"] == "keras":
                job["out"] = str(Path(tmp) / f"{n}-{Path(job['out']).name}")
        opened = iter(open_many(jobs))
        for i, path, data, pairs in plans:
            found = [next(opened) for _ in pairs]
            try:
                for (key, job), result in zip(pairs, found):
                    if isinstance(result, EdgekitError):
                        raise result
                    if job["check"] == "keras":
                        check_fits(result, data, what=f"{key}.model")
            except EdgekitError as exc:
                problems[i] = type(exc)(f"{path}: {exc}")
    return problems


def _given_jobs(rec, path: Path):
    """``(data, [(key, job)])`` for the models ``rec`` gives (None when it gives none)."""
    from .data import load_for_recipe
    from .recipe import with_model_paths

    rec = with_model_paths(rec, path.parent)
    given = [(k, getattr(rec, k)) for k in ("teacher", "student") if getattr(rec, k) is not None]
    kinds = {k: classify(cfg.model) for k, cfg in given}
    opened = [(k, cfg) for k, cfg in given if kinds[k].kind in ("keras", "savedmodel", "builder")]
    converted = [(k, kinds[k]) for k, _ in given if kinds[k].converted]
    if not opened and not converted:
        return None
    data = load_for_recipe(rec, base=path.parent)
    sample = np.concatenate([data.x_val, data.x_test, data.x_train])[:SAMPLE_ROWS]
    pairs = [(k, open_job(cfg.model, Path(f"{k}.keras"), sample=sample, input_shape=data.input_shape,
                          num_outputs=data.num_classes, width=cfg.width, what=f"{k}.model")) for k, cfg in opened]
    pairs += [(k, converted_job(ref.path, ref.kind, data, what=f"{k}.model")) for k, ref in converted]
    return data, pairs


def _open_one(job: dict) -> dict:
    ref = classify(job["value"])
    if ref.kind == "zoo":  # a bare folder name: a SavedModel in the working directory
        ref = parse_model_ref(job["value"], Path.cwd())
    with np.load(job["sample"], allow_pickle=False) as f:
        sample = f["x"]
    model, info = load(ref, sample=sample, input_shape=tuple(job["input_shape"]),
                       num_outputs=job["num_outputs"], width=job["width"], work_dir=Path(job["out"]).parent)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(f"{ref.path}: the model has {len(model.inputs)} inputs and {len(model.outputs)} "
                         "outputs; edgekit takes models with one input and one output")
    from .fitting import save_model

    save_model(model, Path(job["out"]))
    info.update({"input_shape": [d for d in model.input_shape[1:]],
                 "output_shape": [d for d in model.output_shape[1:]],
                 "layers": [[layer.name, type(layer).__name__] for layer in model.layers],
                 "params": int(model.count_params()), "name": model.name})
    if ref.kind != "builder":
        info.update({"kind": ref.kind, "path": str(ref.path), "sha256": sha256_of(ref.path)})
    else:
        info.update({"kind": "builder", "path": str(ref.path), "function": ref.function,
                     "sha256": sha256_of(ref.path)})
    return info


def _check_converted(job: dict) -> dict:
    import types

    from ._keras3 import fit_shape
    from .external import inspect_model
    from .external.stage import check_given

    data = types.SimpleNamespace(input_shape=tuple(job["input_shape"]), num_classes=job["num_classes"],
                                 task=job["task"])
    check_given(Path(job["value"]), job["kind"], data)
    with np.load(job["sample"], allow_pickle=False) as f:
        x = f["x"]
    if len(x):
        given = inspect_model(Path(job["value"]), job["kind"])
        given.predict(fit_shape(tuple(given.input_shape), x))  # runs it once: a crash ends this child
    return {}


def _child(job_file: str) -> int:
    batch = json.loads(Path(job_file).read_text())
    results = Path(batch["results"])
    last = 0
    for index, job in enumerate(batch["jobs"]):
        if index and job["check"] == "keras":
            from ._tf import keras

            keras().backend.clear_session()  # layer names as a child of its own would give them
        try:
            info = _check_converted(job) if job["check"] == "converted" else _open_one(job)
            rec = {"index": index, "ok": True, "info": info}
        except EdgekitError as exc:
            rec = {"index": index, "ok": False, "exit_code": exc.exit_code, "message": str(exc)}
            print(f"error: {exc}", file=sys.stderr)
            last = exc.exit_code
        except Exception as exc:  # noqa: BLE001 - one line for the parent
            rec = {"index": index, "ok": False, "exit_code": 1, "message": f"{type(exc).__name__}: {_line(exc)}"}
            print(f"error: {rec['message']}", file=sys.stderr)
            last = 1
        with results.open("a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
    return last if last else 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    sys.exit(_child(sys.argv[1]))


# ----------------------------------------------------------------------------- in the pipeline


def check_fits(info: dict, data, *, what: str = "model") -> str:
    """Check a given model's input and output shapes (``info`` from :func:`open_in_child`)
    against ``data``; returns ``"same"`` or ``"squeeze"`` (see :func:`edgekit._keras3.shape_fit`).
    Raises :class:`DataError` saying both shapes and the fix."""
    from ._keras3 import ShapeMismatch, shape_fit

    name = info.get("path") or what
    try:
        fit = shape_fit(tuple(info["input_shape"]), data.input_shape)
    except ShapeMismatch as exc:
        raise DataError(f"{what}: {name}: {exc}") from None
    out = tuple(info["output_shape"])
    if data.task == "anomaly":
        inputs = tuple(data.input_shape if fit == "same" else data.input_shape[:-1])
        if out != inputs:
            raise DataError(f"{what}: {name}: an anomaly autoencoder reconstructs its input {inputs}, this model "
                            f"gives {out}")
    elif data.task == "regression":
        if out not in ((1,), ()):
            raise DataError(f"{what}: {name}: task regression needs one output, the model gives {out}")
    elif out != (data.num_classes,):
        raise DataError(f"{what}: {name}: the model gives outputs {out}, the data has {data.num_classes} classes; "
                        "give a model with one logit per class, or data with its classes")
    return fit


def squeeze_data(data):
    """``data`` without the channel axis of size 1 (for a model that takes ``(features,)``)."""
    import dataclasses

    return dataclasses.replace(data, **{f"x_{s}": getattr(data, f"x_{s}")[..., 0] for s in ("train", "val", "test")})


def fine_tune(model, data, cfg, *, seed: int, progress=None, stage: str = "teacher", teacher=None) -> int:
    """Fine-tune a given model for ``cfg.epochs`` (only because the recipe says so): on the task's
    loss, or, for a student with a ``teacher``, on the distillation loss. Returns the epochs run."""
    from . import tasks
    from ._tf import tf
    from .fitting import callbacks, make_optimizer

    tf().keras.utils.set_random_seed(seed)
    task = tasks.get(data.task)
    log.info("%s: fine-tuning the given model for %d epochs (the recipe's %s.epochs)", stage, cfg.epochs,
             stage)
    if teacher is not None:
        def targets(split):
            x, _ = task.fit_data(data, split)
            return task.distill_targets(data, split, teacher.predict(x, batch_size=256, verbose=0))

        fit, val = targets("train"), (targets("val") if len(data.x_val) else None)
        loss, metrics = (task.distill_loss(data, temperature=cfg.temperature, alpha=cfg.alpha),
                         task.distill_metrics(data))
    else:
        fit = task.fit_data(data, "train")
        val = task.fit_data(data, "val") if len(data.x_val) else None
        loss, metrics = task.loss(), task.keras_metrics()
    model.compile(optimizer=make_optimizer(cfg.optimizer, cfg.learning_rate, cfg.momentum), loss=loss,
                  metrics=metrics)
    hist = model.fit(*fit, epochs=cfg.epochs, batch_size=cfg.batch_size, validation_data=val, verbose=0,
                     callbacks=callbacks(stage, cfg, cfg.epochs, has_val=val is not None, progress=progress))
    losses = hist.history.get("loss", [])
    if losses and not all(np.isfinite(losses)):
        raise ModelError(f"{stage}: fine-tuning the given model diverged (loss {losses[-1]}); lower "
                         f"{stage}.learning_rate")
    return len(losses)
