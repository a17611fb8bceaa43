"""edgekit.tflite_file: the one flatbuffer reader that mcu, opcosts and parity share.

The reader's view of a model is checked against LiteRT's interpreter reading the same file
(tensor shapes, types and quantization must be equal, exactly).
"""

from __future__ import annotations

import numpy as np
import pytest

from edgekit import mcu, opcosts, parity, tflite_file
from edgekit.errors import ConversionError


def test_ops_tensors_and_io_agree_with_the_interpreter(tiny_models):
    from ai_edge_litert.interpreter import Interpreter

    for path in (tiny_models.float_tflite, tiny_models.int8_tflite, tiny_models.full_int8_tflite):
        m = tflite_file.read(path)
        assert m.what == str(path) and m.size_bytes == path.stat().st_size
        sg = m.subgraphs[0]
        it = Interpreter(model_path=str(path))
        assert sg.inputs == (it.get_input_details()[0]["index"],)
        assert sg.outputs == (it.get_output_details()[0]["index"],)
        assert m.ops == sorted({op["op_name"] for op in it._get_ops_details()})  # noqa: SLF001
        assert [o.op for o in sg.operators] == [op["op_name"] for op in it._get_ops_details()]  # noqa: SLF001
        for d in it.get_tensor_details():
            t = sg.tensors[d["index"]]
            assert (t.name, t.shape, np.dtype(t.dtype.lower())) == (d["name"], tuple(d["shape"]), np.dtype(d["dtype"]))
            scale, zero = d["quantization"]
            assert (t.per_tensor or (0.0, 0)) == (scale, zero)  # exactly
            assert len(t.scale) == len(d["quantization_parameters"]["scales"])
        assert any(t.const for t in sg.tensors) and not sg.tensors[sg.inputs[0]].const


def test_the_three_readers_read_one_view(tiny_models):
    path = tiny_models.full_int8_tflite
    m = tflite_file.read(path.read_bytes())
    assert m.what == f"model ({path.stat().st_size} bytes)"
    assert mcu.model_ops(path) == m.ops == ["CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "RESHAPE"]
    assert [c.op for c in opcosts.op_costs(path)] == [o.op for o in m.subgraphs[0].operators]
    sg = m.subgraphs[0]
    scale, zero = sg.tensors[sg.inputs[0]].per_tensor
    assert opcosts.io_quantization(path)["input"] == {"dtype": "int8", "shape": list(sg.tensors[sg.inputs[0]].shape),
                                                     "scale": scale, "zero_point": zero}
    assert parity._io_quantization(path)["input"]["scale"] == scale  # noqa: SLF001


def test_float_io_models_find_their_int8_edges_through_quantize_ops(tiny_models):
    q = parity._io_quantization(tiny_models.int8_tflite)  # noqa: SLF001
    assert q["input"]["dtype"] == "int8" and q["output"]["dtype"] == "int8"
    assert opcosts.io_quantization(tiny_models.int8_tflite)["input"]["scale"] is None  # float I/O
    assert parity._io_quantization(tiny_models.float_tflite) == {"input": None, "output": None}  # noqa: SLF001


@pytest.mark.parametrize("cut", ["empty", "text", "truncated", "no_identifier"])
def test_anything_but_a_flatbuffer_is_one_conversion_error(tiny_models, cut):
    data = tiny_models.full_int8_tflite.read_bytes()
    bad = {"empty": b"", "text": b"this is not a model at all",
           "truncated": data[:64], "no_identifier": data[:4] + b"XXXX" + data[8:]}[cut]
    for reader in (tflite_file.read, mcu.model_ops, opcosts.op_costs, opcosts.io_quantization):
        with pytest.raises(ConversionError, match=r"^model \(\d+ bytes\) is not a valid TFLite flatbuffer"):
            reader(bad)


def test_an_operator_naming_a_missing_opcode_is_a_corrupt_model(tiny_models):
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    model = fbu.read_model_from_bytearray(bytearray(tiny_models.full_int8_tflite.read_bytes()))
    model.subgraphs[0].operators[1].opcodeIndex = 99
    bad = bytes(fbu.convert_object_to_bytearray(model))
    with pytest.raises(ConversionError, match="operator 1 of subgraph 0 uses opcode index 99, but the model has 4"):
        opcosts.op_costs(bad)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ConversionError, match="nope.tflite: model file not found"):
        tflite_file.read(tmp_path / "nope.tflite")


def test_strip_names_takes_out_only_strings_and_puts_them_back(tiny_models, tmp_path):
    """The stripped file computes what the named one does (LiteRT and TFLite Micro), has no tensor
    or subgraph name left, and with_names gives back the very same bytes; read_named uses a sidecar
    only when it was written for these bytes."""
    import json

    from ai_edge_litert.interpreter import Interpreter
    from tflite_micro.python.tflite_micro import runtime

    blob = tiny_models.full_int8_tflite.read_bytes()
    stripped, names = tflite_file.strip_names(blob)
    before, after = tflite_file.read(blob), tflite_file.read(stripped)
    assert len(stripped) < len(blob) - sum(len(t.name) for t in before.subgraphs[0].tensors) // 2
    assert all(t.name == "" for t in after.subgraphs[0].tensors)
    assert [(t.shape, t.dtype, t.scale, t.const) for t in after.subgraphs[0].tensors] == \
        [(t.shape, t.dtype, t.scale, t.const) for t in before.subgraphs[0].tensors]
    assert names["subgraphs"][0]["tensors"] == [t.name for t in before.subgraphs[0].tensors]
    assert tflite_file.with_names(stripped, names) == blob

    x = np.random.default_rng(0).integers(-128, 127, (4, *before.subgraphs[0].tensors[0].shape[1:]), dtype=np.int8)
    outs = []
    for model in (blob, stripped):
        it = Interpreter(model_content=model)
        it.allocate_tensors()
        micro = runtime.Interpreter.from_bytes(model, arena_size=1 << 18)
        i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
        got = []
        for sample in x:
            it.set_tensor(i, sample[None])
            it.invoke()
            micro.set_input(sample[None], 0)
            micro.invoke()
            got.append((it.get_tensor(o).copy(), micro.get_output(0).copy()))
        outs.append(got)
    assert all(np.array_equal(a, b) for g, h in zip(*outs) for a, b in zip(g, h))

    path = tmp_path / "model_int8.tflite"
    path.write_bytes(stripped)
    assert tflite_file.read_named(path) == stripped                      # no sidecar: the file as it is
    tflite_file.names_path(path).write_text(json.dumps(names))
    assert tflite_file.names_path(path).name == "model_int8.tensor_names.json"
    assert tflite_file.read_named(path) == blob
    path.write_bytes(tiny_models.int8_tflite.read_bytes())              # another file: its sidecar is stale
    assert tflite_file.read_named(path) == tiny_models.int8_tflite.read_bytes()
    other = tflite_file.strip_names(tiny_models.int8_tflite.read_bytes())[0]
    with pytest.raises(ValueError, match="another model"):
        tflite_file.with_names(other, names)
