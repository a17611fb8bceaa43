"""Stage 5: convert per target, with the real TFLite converter (and tf2onnx for ONNX).

One entry for every target kind: ``convert_target(profile, models, data, cfg, out_dir) ->
TargetArtifacts`` hands the work to the kind's module in :mod:`edgekit.targets` (found in its
registry; an unknown kind fails naming the known ones). What each kind ships:

- ``mobile`` (:mod:`edgekit.targets.mobile`): ``model_int8.tflite`` (int8, float I/O),
  ``model_fp16.tflite``, ``model.onnx``
- ``rpi`` (:mod:`edgekit.targets.rpi`): ``model_int8.tflite`` and ``bundle/`` (model, standalone
  evaluator, test sample, requirements.txt, run.sh): copy it to a Pi and run ``sh run.sh``
- ``mcu`` (:mod:`edgekit.targets.mcu`): ``model_int8.tflite`` (full integer, int8 I/O),
  ``model_data.h/.cc`` (aligned C array + measured arena), ``op_resolver.h``; with
  ``convert.mcu_scheme: int16x8`` the same file names hold the int16x8 model (int16 activations
  and I/O; format ``tflite-full-int16x8``)

This module holds what the kinds share: the converters (:func:`to_tflite`, :func:`to_onnx`), the
integer-only check, the evaluator's input file and the sources a target is made from.

Int8 models come from the QAT model when there is one, else by post-training quantization of
the float model with a representative dataset drawn from the training split. After conversion
the op list is checked: an "int8" model that kept float ops is reported, and fails for MCUs.
For MCUs the ops are checked against TFLite Micro's kernels before any file is written, and the
ONNX export is run in ONNX Runtime on the test split and must agree with the Keras model on at
least :data:`ONNX_MIN_AGREEMENT` of the predictions. A target that fails leaves no files of
its own behind (each file is written atomically; the ones this call added are removed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from ._io import write_text
from ._tf import tf
from .data import Dataset
from .errors import ConversionError
from .fitting import size_info
from .recipe import ConvertConfig, TargetProfile

log = logging.getLogger(__name__)

EVALUATOR = Path(__file__).parent / "ondevice" / "evaluate.py"
FLOAT_OPS_OK = {"QUANTIZE", "DEQUANTIZE"}
ONNX_MIN_AGREEMENT = 0.99  # share of test samples whose ONNX Runtime argmax equals Keras'


@dataclasses.dataclass(frozen=True)
class Artifact:
    """One model file of a target: its format, the runtime that runs it, and what it is."""

    path: Path
    format: str          # tflite-int8 | tflite-fp16 | tflite-full-int8 | onnx
    runtime: str         # the runtime the evaluator should use
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class TargetArtifacts:
    profile: TargetProfile
    artifacts: list[Artifact]       # the first one is the target's primary model
    files: list[Path]               # every file written (for the manifest)


def representative(data: Dataset, n: int, seed: int):
    """A generator of ``n`` training samples (batch 1) for calibrating int8 ranges: the samples the
    task fits on (anomaly: normal samples only, the inputs the autoencoder is built to see)."""
    from . import tasks

    x = tasks.get(data.task).fit_data(data, "train")[0]
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x))[: min(n, len(x))]

    def gen():
        for i in idx:
            yield [x[i : i + 1]]

    return gen


def to_tflite(model, *, mode: str, rep=None, signature: bool = True, batch: int | None = None) -> bytes:
    """Convert a Keras model. ``mode``: float32 | fp16 | dynamic (int8 weights, float
    activations) | int8 (float I/O) | full-int8 (int8 I/O) | int16x8 (int16 activations, int8
    weights, float I/O) | full-int16x8 (the same with int16 I/O, for TFLite Micro).

    ``rep`` (a representative-dataset generator) is required for int8/int16x8 modes unless the
    model is quantization-aware trained. Raises :class:`ConversionError` with the converter's reason.

    The model's inference call (``training=False``) is traced once and converted as a frozen graph.
    ``signature``: write the ``serving_default`` signature that LiteRT's signature runners call,
    as ``TFLiteConverter.from_keras_model`` writes it (input and output named after the Keras
    model's, the I/O tensors named as that way names them). That way lowers the model through a
    SavedModel first (0.2-14 s for a zoo model); the frozen graph gives the same ops, weights,
    quantization, outputs and file size 5-17x faster (``tests/test_convert.py`` checks they
    compute the same, ``tools/bench_convert.py`` prints both). Without the signature (files nobody calls by
    signature: TFLite Micro's, and models converted only to be measured) the file is about 150
    bytes smaller. A model with several inputs or outputs, or one the frozen-graph path fails on,
    goes the ``from_keras_model`` way (whose error names the problem).

    ``batch``: the input's batch size, ``None`` (any; LiteRT resizes it) or a fixed size. TFLite
    Micro runs one sample per invoke, so its files are converted with ``batch=1``: the converter
    then folds what a dynamic batch has to compute at run time (a ``Reshape`` layer's
    SHAPE -> STRIDED_SLICE -> PACK chain) into constants, which saves ops, tensors, flash and
    arena (on conv1d_small at width 0.5: 11 -> 8 ops, 7,992 -> 6,976 B, arena 4,800 -> 4,032 B;
    ``tests/test_convert.py``). The ``from_keras_model`` fallback keeps a dynamic batch.
    """
    try:
        blob = _convert(_frozen_converter(model, batch), mode, rep)
        return _with_signature(blob, model) if signature else blob
    except Exception as exc:  # noqa: BLE001 - the SavedModel way below raises what names the problem
        log.debug("frozen-graph conversion failed (%s); converting through a SavedModel", exc)
    return _convert(tf().lite.TFLiteConverter.from_keras_model(model), mode, rep)


# the traced call's input and output tensors in a frozen-graph conversion, before _with_signature
# names them as a SavedModel conversion does ("Identity" is TensorFlow's name for a function's output)
_FROZEN_INPUT, _FROZEN_OUTPUT = "edgekit_input", "Identity"


def _frozen_converter(model, batch: int | None = None):
    """A converter of ``model``'s inference call (``training=False``), traced once for its input
    with ``batch`` samples (None: any), without a SavedModel in between (so no signature def)."""
    t = tf()
    spec = t.TensorSpec((batch, *model.input_shape[1:]), model.inputs[0].dtype, name=_FROZEN_INPUT)
    call = t.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    conv = t.lite.TFLiteConverter.from_concrete_functions([call], model)
    conv.experimental_lower_to_saved_model = False
    return conv


def _with_signature(blob: bytes, model) -> bytes:
    """``blob`` (a frozen-graph conversion of ``model``) with the ``serving_default`` signature def
    and I/O tensor names a SavedModel conversion of ``model`` has: signature input and output
    named ``model.input_names[0]`` and ``model.output_names[0]``, input tensor
    ``serving_default_<input>:0``, output tensor ``StatefulPartitionedCall:0`` (and the quantize
    steps the converter derived from them renamed alike). Raises ValueError for a model with
    several inputs or outputs, or a file that is not one subgraph with one input and one output."""
    from .tflite_file import with_signature

    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError("a signature is written here for one input and one output only")
    in_name, out_name = model.input_names[0], model.output_names[0]
    renames = {_FROZEN_INPUT: f"serving_default_{in_name}:0", _FROZEN_OUTPUT: "StatefulPartitionedCall:0"}

    def rename(name: str) -> str:
        for old, new in renames.items():
            # the name itself, or one the converter derived from it ("Identity1", "edgekit_input_int16")
            if name.startswith(old) and re.fullmatch(r"|\d+|_int8|_int16", name[len(old):]):
                return new + name[len(old):]
        return name

    return with_signature(blob, key="serving_default", input_name=in_name, output_name=out_name, rename=rename)


def _convert(conv, mode: str, rep) -> bytes:
    lite = tf().lite
    if mode == "fp16":
        conv.optimizations = [lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf().float16]
    elif mode == "dynamic":
        conv.optimizations = [lite.Optimize.DEFAULT]
    elif mode in ("int16x8", "full-int16x8"):
        conv.optimizations = [lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        if mode == "full-int16x8":
            conv.inference_input_type = tf().int16
            conv.inference_output_type = tf().int16
    elif mode in ("int8", "full-int8"):
        conv.optimizations = [lite.Optimize.DEFAULT]
        if rep is not None:
            conv.representative_dataset = rep
        if mode == "full-int8":
            conv.target_spec.supported_ops = [lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf().int8
            conv.inference_output_type = tf().int8
    elif mode != "float32":
        raise ValueError(f"unknown conversion mode {mode!r}")
    try:
        return conv.convert()
    except Exception as exc:  # the converter raises many types; keep what names the problem
        raise ConversionError(f"TFLite conversion ({mode}) failed: {_converter_reason(exc)}") from exc


def _converter_reason(exc: Exception) -> str:
    """The converter's ``error: ...`` lines (they name the op, e.g. ``'tf.Cumprod' op is
    neither a custom op nor a flex op``) and its "TF Select ops" list, deduplicated; else its
    first line."""
    text = str(exc).strip()
    errors = [e for e in dict.fromkeys(m.group(1).strip() for m in re.finditer(r"\berror: (.+)", text))
              if not e.startswith("failed while converting")]
    select = re.search(r"TF Select ops: (.+)", text)
    if select:
        errors.append(f"TensorFlow ops without a TFLite builtin kernel: {select.group(1).strip()}")
    if errors:
        return "; ".join(errors)
    return text.splitlines()[0] if text else type(exc).__name__


def tensor_types(blob: bytes) -> dict[str, Any]:
    """Input/output dtypes and the ops of a TFLite model, read by the LiteRT interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=blob)
    ops = sorted({op["op_name"] for op in it._get_ops_details()})  # noqa: SLF001 - only op names
    return {"input": str(np.dtype(it.get_input_details()[0]["dtype"])),
            "output": str(np.dtype(it.get_output_details()[0]["dtype"])), "ops": ops}


def check_integer_only(blob: bytes, *, require_int_io: bool) -> dict[str, Any]:
    """Verify an int8 model kept no float compute: every tensor feeding a non-(de)quantize op
    must be integer. Returns the type summary; raises ConversionError when ``require_int_io``
    and the model has float inputs, outputs or float compute."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=blob)
    details = {d["index"]: d for d in it.get_tensor_details()}
    float_ops = []
    for op in it._get_ops_details():  # noqa: SLF001
        if op["op_name"] in FLOAT_OPS_OK:
            continue
        dtypes = {np.dtype(details[i]["dtype"]).kind for i in op["outputs"] if i in details}
        if "f" in dtypes:
            float_ops.append(op["op_name"])
    info = tensor_types(blob)
    info["float_ops"] = sorted(set(float_ops))
    if require_int_io and (info["float_ops"] or "float" in info["input"] or "float" in info["output"]):
        raise ConversionError(
            f"model is not fully integer: float ops {info['float_ops'] or 'none'}, input {info['input']}, "
            f"output {info['output']}; the target needs int8 everywhere")
    if info["float_ops"]:
        log.warning("int8 model kept float ops: %s", ", ".join(info["float_ops"]))
    return info


def onnx_bytes(model) -> bytes:
    """Export the float Keras model to ONNX with tf2onnx (opset 13); returns the serialized model."""
    import tf2onnx

    spec = (tf().TensorSpec((None, *model.input_shape[1:]), tf().float32, name="input"),)
    try:
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=13)
    except Exception as exc:
        raise ConversionError(f"ONNX export failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    return proto.SerializeToString()


def onnx_agreement(blob: bytes, model, x: np.ndarray, *, batch_size: int = 256,
                   task: str = "classification") -> dict[str, Any]:
    """Run the ONNX model ``blob`` in ONNX Runtime (CPU) on ``x`` and compare with Keras.

    Returns ``{"onnx_agreement_with_keras": share of samples whose argmax is equal (0..1),
    "onnx_max_abs_diff": largest absolute difference of the raw outputs, "onnx_samples": n}``.
    For tasks other than classification a sample agrees when every output is within
    ``1e-4 · (1 + max |Keras output|)`` of Keras' (outputs are values, not class scores).
    Raises ``ValueError`` for an empty ``x``; ONNX Runtime errors become ConversionError.
    """
    import onnxruntime as ort

    x = np.asarray(x, dtype=np.float32)
    if len(x) == 0:
        raise ValueError("onnx_agreement needs at least one sample")
    try:
        sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        got = np.concatenate([sess.run(None, {name: x[i : i + batch_size]})[0]
                              for i in range(0, len(x), batch_size)])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ConversionError(f"ONNX model does not run in ONNX Runtime: {str(exc).splitlines()[0]}") from exc
    want = np.asarray(model.predict(x, batch_size=batch_size, verbose=0))
    if task == "classification":
        agree = got.argmax(-1) == want.argmax(-1)
    else:
        diff = np.abs(got.astype(np.float64) - want).reshape(len(x), -1).max(1)
        agree = diff <= 1e-4 * (1 + float(np.abs(want).max()))
    return {"onnx_agreement_with_keras": float(np.mean(agree)),
            "onnx_max_abs_diff": float(np.max(np.abs(got.astype(np.float64) - want))),
            "onnx_samples": int(len(x))}


def to_onnx(model, path: Path, *, x_check: np.ndarray | None = None,
            min_agreement: float = ONNX_MIN_AGREEMENT, task: str = "classification") -> tuple[Path, dict[str, Any]]:
    """Export ``model`` to ONNX and, given ``x_check``, verify it in ONNX Runtime first.

    Writes ``path`` atomically only when the check passes; returns ``(path, check)`` with the
    numbers of :func:`onnx_agreement` (``{}`` without ``x_check``). Raises
    :class:`ConversionError` (nothing written) when the argmax agreement with the Keras model
    is below ``min_agreement``.
    """
    blob = onnx_bytes(model)
    check: dict[str, Any] = {}
    if x_check is not None:
        check = onnx_agreement(blob, model, x_check, task=task)
        agree = check["onnx_agreement_with_keras"]
        if agree < min_agreement:
            what = "argmax agreement" if task == "classification" else "agreement (outputs within 1e-4)"
            raise ConversionError(
                f"ONNX export disagrees with the Keras model: {what} {agree:.4f} on "
                f"{check['onnx_samples']} test samples < {min_agreement} (max abs output difference "
                f"{check['onnx_max_abs_diff']:.3g}); the tf2onnx conversion changed the model")
        log.info("onnx: argmax agreement with Keras %.4f on %d samples (max abs diff %.3g)",
                 agree, check["onnx_samples"], check["onnx_max_abs_diff"])
    return write_text(path, blob), check


def write_eval_npz(path: Path, data: Dataset, reference_pred: np.ndarray | None = None,
                   samples: int | None = None, *, reference_model=None) -> Path:
    """The evaluator's input: ``x`` float32 test inputs, ``y`` labels, ``ref`` the float model's
    outputs, ``task`` (0-d string) and for anomaly ``threshold`` (see ``ondevice/evaluate.py``).

    ``reference_model`` (a Keras float model) gives ``ref`` and the threshold through the task's
    :meth:`~edgekit.tasks.Classification.eval_arrays`; ``reference_pred`` (predicted classes) is
    the classification shortcut.
    """
    from . import tasks

    n = len(data.x_test) if samples is None else min(samples, len(data.x_test))
    import io

    if reference_model is not None:
        arrays = tasks.get(data.task).eval_arrays(reference_model, data, n)
    else:
        arrays = {"y": data.y_test[:n].astype("int64"), "ref": np.asarray(reference_pred)[:n].astype("int64"),
                  "task": np.array(data.task)}
    buf = io.BytesIO()
    np.savez_compressed(buf, x=data.x_test[:n].astype("float32"), **arrays)
    return write_text(path, buf.getvalue())


class KerasSource:
    """What :func:`convert_target` makes a target's models from in a Keras run: the float Keras
    model and the QAT model (or None). Another source (a given float .tflite or .onnx,
    :class:`edgekit.external.GivenSource`) offers the same three members.

    ``tflite(mode)``: the model in a :func:`to_tflite` mode (int8 modes from the QAT model when
    there is one, else post-training with a representative dataset); ``onnx(out_dir)``: the ONNX
    artifacts of a ``onnx`` format (``model.onnx``, checked in ONNX Runtime against Keras);
    ``onnx_only``: whether mobile targets get ONNX artifacts only (False here).

    ``cache``: a dict shared by the sources of one run's targets (same models, data, config and
    seed), so a mode that two targets ship (rpi4's and mobile's ``tflite-int8``) is converted once;
    the converter is deterministic, so the second target gets the very bytes it would have made.
    """

    onnx_only = False

    def __init__(self, models: dict, data: Dataset, cfg: ConvertConfig, seed: int, *, cache: dict | None = None):
        self.models, self.data, self.cfg, self.seed = models, data, cfg, seed
        self.cache = {} if cache is None else cache

    def _rep(self):
        return representative(self.data, self.cfg.representative_samples, self.seed)

    def tflite(self, mode: str, *, signature: bool = True, batch: int | None = None) -> bytes:
        model = self.models["qat"] if mode in ("int8", "full-int8") and self.models.get("qat") is not None \
            else self.models["float"]
        # keyed by the model object itself (held in the value, so its id is not reused) and by what
        # the representative dataset is made from
        key = (id(model), mode, signature, batch, id(self.data), self.cfg.representative_samples, self.seed)
        hit = self.cache.get(key)
        if hit is not None and hit[0] is model and hit[1] is self.data:
            log.debug("%s conversion of this model made earlier in this run: reused", mode)
            return hit[2]
        rep = self._rep() if mode in ("int8", "full-int8", "int16x8", "full-int16x8") else None
        blob = to_tflite(model, mode=mode, rep=rep, signature=signature, batch=batch)
        self.cache[key] = (model, self.data, blob)
        return blob

    def onnx(self, out_dir: Path) -> list[Artifact]:
        p, check = to_onnx(self.models["float"], out_dir / "model.onnx", x_check=self.data.x_test, task=self.data.task)
        return [Artifact(p, "onnx", "onnxruntime", check)]


def convert_target(profile: TargetProfile, models, data: Dataset, cfg: ConvertConfig, out_dir: Path,
                   *, seed: int, eval_npz: Path, max_accuracy_drop: float | None = None,
                   tflite_cache: dict | None = None) -> TargetArtifacts:
    """Write the artifacts of ``profile`` into ``out_dir``.

    ``models``: ``{"float": keras float model, "qat": QAT model or None, "teacher": the teacher
    (optional: the reference of ``convert.selective``)}``, or a source object with the members of
    :class:`KerasSource` (a given float model). ``max_accuracy_drop``: the recipe's quality gate
    (the budget ``convert.selective: auto`` chooses against). ``tflite_cache``: the ``cache`` of
    :class:`KerasSource`, one dict for all targets of a run. Raises
    :class:`ConversionError` when a format cannot be produced, an op cannot run on the target
    (MCU: checked before any file is written) or the ONNX export disagrees with Keras. On any
    failure the files and folders this call added to ``out_dir`` are removed again (files it
    overwrote stay in their new version), so a failed target leaves no partial set behind.
    """
    created = not out_dir.exists()
    before = set() if created else {p.name for p in out_dir.iterdir()}
    try:
        source = KerasSource(models, data, cfg, seed, cache=tflite_cache) if isinstance(models, dict) else models
        return _convert_target(profile, source, data, cfg, out_dir, eval_npz=eval_npz,
                               max_accuracy_drop=max_accuracy_drop)
    except BaseException:
        _remove_new_entries(out_dir, keep=before, remove_dir=created)
        raise


def _remove_new_entries(folder: Path, *, keep: set[str], remove_dir: bool) -> None:
    """Delete what ``folder`` holds beyond the names in ``keep`` (and ``folder`` itself when
    ``remove_dir`` and it ends up empty)."""
    if not folder.is_dir():
        return
    from ._io import remove

    for p in folder.iterdir():
        if p.name in keep:
            continue
        with contextlib.suppress(OSError):
            remove(p, root=folder)
    if remove_dir and not any(folder.iterdir()):
        remove(folder, root=folder.parent)


def _convert_target(profile: TargetProfile, source, data: Dataset, cfg: ConvertConfig, out_dir: Path,
                    *, eval_npz: Path, max_accuracy_drop: float | None = None) -> TargetArtifacts:
    from . import targets

    spec = targets.get(profile.kind)  # an unknown kind fails before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)
    arts, files = spec.convert(source, profile, targets.ConvertContext(data, cfg, out_dir, eval_npz,
                                                                          max_accuracy_drop))
    for a in arts:
        log.info("%s: %s %s (%d bytes)", profile.name, a.format, a.path.name, size_info(a.path.read_bytes())["size_bytes"])
    return TargetArtifacts(profile, arts, files)


def preprocess_json(data: Dataset) -> dict | None:
    """What a device must do to a raw input before the model sees it (None: nothing).

    The normalization was fitted on the training split; ``eval.npz`` already holds normalized
    inputs, so this is for the application that feeds the model raw sensor or pixel values.
    """
    norm = data.normalization
    if norm is None:
        return None
    return {"normalize": norm["kind"], "formula": "x_model = (x_raw - offset) / scale",
            "shape": list(norm["offset"].shape), "offset": norm["offset"].ravel().tolist(),
            "scale": norm["scale"].ravel().tolist()}
