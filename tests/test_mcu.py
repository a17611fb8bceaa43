"""edgekit.mcu: ops and op resolver, C array, tensor arena measured in tflite-micro."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require_tool  # noqa: E402 - skips locally, fails under CI=true
from edgekit import mcu
from edgekit.errors import ConversionError

TINY_OPS = ["CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "RESHAPE"]


# ---------------------------------------------------------------------------------- imports


def test_import_pulls_in_neither_tensorflow_nor_tflite_micro():
    code = ("import sys, edgekit.mcu; "
            "bad = [m for m in ('tensorflow', 'tflite_micro') if m in sys.modules]; "
            "print(*bad, file=sys.stderr); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# -------------------------------------------------------------------------------------- ops


def test_model_ops_of_tiny_full_int8_model(tiny_models):
    ops = mcu.model_ops(tiny_models.full_int8_tflite.read_bytes())
    assert ops == TINY_OPS
    assert mcu.model_ops(tiny_models.full_int8_tflite) == ops  # a path works too
    mcu.check_ops(ops)


def test_model_ops_of_int8_model_with_float_io(tiny_models):
    ops = mcu.model_ops(tiny_models.int8_tflite.read_bytes())
    assert set(TINY_OPS) | {"QUANTIZE", "DEQUANTIZE"} == set(ops)
    mcu.check_ops(ops)


@pytest.mark.parametrize("cut", ["empty", "text", "truncated", "no_identifier"])
def test_model_ops_rejects_corrupt_bytes(tiny_models, cut):
    data = tiny_models.full_int8_tflite.read_bytes()
    bad = {"empty": b"", "text": b"this is not a model at all",
           "truncated": data[:64], "no_identifier": data[:4] + b"XXXX" + data[8:]}[cut]
    with pytest.raises(ConversionError, match="is not a valid TFLite flatbuffer"):
        mcu.model_ops(bad)


def test_tflm_ops_table_is_well_formed():
    from tflite_micro.python.tflite_micro import runtime

    builtins = {k for k in vars(runtime.schema_fb.BuiltinOperator) if not k.startswith("_")}
    methods = list(mcu.TFLM_OPS.values())
    assert len(methods) == len(set(methods)), "one Add* method per op"
    for op, method in mcu.TFLM_OPS.items():
        assert op.startswith("CUSTOM:") or op in builtins, op
        assert re.fullmatch(r"Add[A-Za-z0-9]+", method), method
    for op in ["CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "SOFTMAX", "QUANTIZE",
               "DEQUANTIZE", "RESHAPE", "MAX_POOL_2D", "AVERAGE_POOL_2D", "ADD", "MEAN"]:
        assert op in mcu.TFLM_OPS
    with pytest.raises(TypeError):
        mcu.TFLM_OPS["FOO"] = "AddFoo"  # read-only


def test_check_ops_names_every_unsupported_op():
    with pytest.raises(ConversionError) as err:
        mcu.check_ops(["CONV_2D", "CUSTOM:foo", "CUSTOM:FlexCumprod", "TOPK_V2"])
    msg = str(err.value)
    assert msg.startswith("ops not supported by TFLite Micro: CUSTOM:FlexCumprod")
    for op in ["CUSTOM:foo", "CUSTOM:FlexCumprod", "TOPK_V2"]:
        assert op in msg
    assert "TensorFlow select op" in msg and "supported: ABS, ADD" in msg
    with pytest.raises(ValueError, match="unknown target"):
        mcu.check_ops(["CONV_2D"], target="tflite")
    with pytest.raises(TypeError):
        mcu.check_ops("CONV_2D")


@pytest.fixture(scope="module")
def unsupported_model(tmp_path_factory) -> Path:
    """A tf_keras model with ops TFLM has no kernel for: TOPK_V2 and a Flex (select) op."""
    from edgekit._tf import keras, tf

    k, t = keras(), tf()
    inp = k.layers.Input((8,))
    out = k.layers.Lambda(lambda x: t.nn.top_k(t.math.cumprod(x, axis=1), k=3).values)(inp)
    conv = t.lite.TFLiteConverter.from_keras_model(k.Model(inp, out))
    conv.target_spec.supported_ops = [t.lite.OpsSet.TFLITE_BUILTINS, t.lite.OpsSet.SELECT_TF_OPS]
    path = tmp_path_factory.mktemp("unsupported") / "model.tflite"
    path.write_bytes(conv.convert())
    return path


def test_unsupported_ops_of_a_converted_model_are_named(unsupported_model):
    ops = mcu.model_ops(unsupported_model.read_bytes())
    assert "CUSTOM:FlexCumprod" in ops and "TOPK_V2" in ops
    with pytest.raises(ConversionError) as err:
        mcu.check_ops(ops)
    assert "CUSTOM:FlexCumprod" in str(err.value) and "TOPK_V2" in str(err.value)


def test_measure_arena_of_unrunnable_model_fails_clearly(unsupported_model):
    with pytest.raises(ConversionError, match="does not run in TFLite Micro even with 64 KiB") \
            as err:
        mcu.measure_arena(unsupported_model, upper_bytes=64 * 1024)
    assert "Failed to get registration" in str(err.value)  # TFLM's own words
    assert "ops without a TFLM kernel: CUSTOM:FlexCumprod, TOPK_V2" in str(err.value)


# ------------------------------------------------------------------------------ op resolver


def test_write_op_resolver_registers_exactly_the_ops(tiny_models, tmp_path):
    ops = mcu.model_ops(tiny_models.int8_tflite.read_bytes())
    path = mcu.write_op_resolver(ops, tmp_path / "op_resolver.h")
    text = path.read_text()
    calls = re.findall(r"resolver\.(Add\w+)\(\)", text)
    assert sorted(calls) == sorted(mcu.TFLM_OPS[op] for op in ops)
    assert len(calls) == len(ops) == 6
    assert f"using OpResolver = tflite::MicroMutableOpResolver<{len(ops)}>;" in text
    assert '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"' in text
    assert "#ifndef EDGEKIT_OP_RESOLVER_H_" in text and "#endif" in text
    assert [p.name for p in tmp_path.iterdir()] == ["op_resolver.h"]  # no temp file left


def test_write_op_resolver_refuses_unsupported_ops(tmp_path):
    with pytest.raises(ConversionError, match="TOPK_V2"):
        mcu.write_op_resolver(["CONV_2D", "TOPK_V2"], tmp_path / "op_resolver.h")
    with pytest.raises(ValueError):
        mcu.write_op_resolver([], tmp_path / "op_resolver.h")
    with pytest.raises(ValueError, match="C identifier"):
        mcu.write_op_resolver(["CONV_2D"], tmp_path / "op_resolver.h", name="my resolver")
    assert not list(tmp_path.iterdir())


def test_op_resolver_header_compiles_against_a_stub_resolver(tmp_path):
    """Without TFLM headers, a stub with the same Add* API checks the C++ and the count N."""
    require_tool("g++", hint="apt-get install g++; CI installs it")
    ops = ["CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "SOFTMAX", "RESHAPE"]
    mcu.write_op_resolver(ops, tmp_path / "op_resolver.h", name="ModelOps")
    stub = tmp_path / "tensorflow/lite/micro/micro_mutable_op_resolver.h"
    stub.parent.mkdir(parents=True)
    methods = "\n".join(
        f"  TfLiteStatus {m}() {{ if (n_ >= N) return kTfLiteError; ++n_; return kTfLiteOk; }}"
        for m in sorted(set(mcu.TFLM_OPS.values())))
    stub.write_text(
        "#pragma once\ntypedef enum { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;\n"
        "namespace tflite {\ntemplate <unsigned int N> class MicroMutableOpResolver {\n public:\n"
        f"{methods}\n  unsigned int n_ = 0;\n}};\n}}\n")
    (tmp_path / "main.cc").write_text(
        '#include <cstdio>\n#include "op_resolver.h"\n'
        "int main() { ModelOps r; int s = RegisterOps(r);\n"
        '  std::printf("%d %u\\n", s, r.n_); return s; }\n')
    exe = tmp_path / "main"
    subprocess.run(["g++", "-std=c++17", "-Wall", "-Werror", "-I", str(tmp_path),
                    str(tmp_path / "main.cc"), "-o", str(exe)], check=True)
    assert subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout \
        == f"0 {len(ops)}\n"


# -------------------------------------------------------------------------------- C array


@pytest.fixture(scope="module")
def arena(tiny_models) -> mcu.ArenaMeasurement:
    return mcu.measure_arena(tiny_models.full_int8_tflite)


def test_write_c_array_round_trips_and_compiles(tiny_models, arena, tmp_path):
    model = tiny_models.full_int8_tflite.read_bytes()
    h, c = mcu.write_c_array(model, tmp_path / "mcu", arena_bytes=arena)
    assert (h.name, c.name) == ("model_data.h", "model_data.cc")
    source, header = c.read_text(), h.read_text()
    assert mcu.read_c_array(c) == model  # byte for byte
    assert "alignas(16) const unsigned char g_model[] = {" in source
    assert f"const unsigned int g_model_len = {len(model)};" in source
    assert "extern const unsigned char g_model[];" in header
    assert "extern const unsigned int g_model_len;" in header
    assert f"constexpr unsigned int kTensorArenaSize = {arena.recommended_bytes};" in header
    assert "measured by edgekit.mcu.measure_arena" in header and "64-bit host" in header
    rows = [ln for ln in source.splitlines() if ln.startswith("    0x")]
    assert all(ln.count("0x") == 12 for ln in rows[:-1]) and 1 <= rows[-1].count("0x") <= 12
    assert sorted(p.name for p in h.parent.iterdir()) == ["model_data.cc", "model_data.h"]

    require_tool("gcc", hint="apt-get install gcc; CI installs it")
    obj = tmp_path / "model_data.o"
    subprocess.run(["gcc", "-c", "-x", "c++", "-std=c++17", "-Wall", "-Wextra", "-Werror",
                    str(c), "-o", str(obj)], check=True)
    nm = subprocess.run(["nm", str(obj)], capture_output=True, text=True, check=True).stdout
    assert re.search(r" R g_model$", nm, re.M) and re.search(r" R g_model_len$", nm, re.M)
    # A C program sees the array through the header: C linkage, length, alignment, constant.
    main = tmp_path / "main.c"
    main.write_text(
        '#include <stdio.h>\n#include <stdint.h>\n#include "model_data.h"\n'
        'int main(void) { printf("%u %u %u %c%c%c%c\\n", g_model_len, '
        "(unsigned)((uintptr_t)g_model % 16), (unsigned)kTensorArenaSize, "
        "g_model[4], g_model[5], g_model[6], g_model[7]); return 0; }\n")
    exe = tmp_path / "main"
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Werror", "-I", str(h.parent), str(main),
                    str(obj), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    assert out == f"{len(model)} 0 {arena.recommended_bytes} TFL3\n"


def test_c_array_compiles_for_cortex_m4(tiny_models, tmp_path, capsys):
    """The C array as an MCU build sees it; prints the object's flash size (text + data)."""
    require_tool("arm-none-eabi-g++", hint="Debian: gcc-arm-none-eabi libnewlib-arm-none-eabi; CI installs it")
    model = tiny_models.full_int8_tflite.read_bytes()
    _, c = mcu.write_c_array(model, tmp_path, arena_bytes=4096)
    obj = tmp_path / "model_data.o"
    subprocess.run(["arm-none-eabi-g++", "-mcpu=cortex-m4", "-mthumb", "-std=c++17", "-c",
                    "-Os", "-Wall", "-Werror", str(c), "-o", str(obj)], check=True)
    elf = obj.read_bytes()
    assert elf[:4] == b"\x7fELF" and int.from_bytes(elf[18:20], "little") == 40  # e_machine: ARM
    sysv = subprocess.run(["arm-none-eabi-size", "-A", str(obj)], capture_output=True,
                          text=True, check=True).stdout
    rodata = sum(int(m.group(1)) for m in re.finditer(r"^\.rodata\S*\s+(\d+)", sysv, re.M))
    assert rodata >= len(model)
    headers = subprocess.run(["arm-none-eabi-objdump", "-h", str(obj)], capture_output=True,
                             text=True, check=True).stdout
    align = re.search(r"^\s*\d+ \.rodata\S*\s+(?:\S+\s+){4}2\*\*(\d+)", headers, re.M)
    assert align and 2 ** int(align.group(1)) >= 16, headers  # alignas(16) survives
    berkeley = subprocess.run(["arm-none-eabi-size", str(obj)], capture_output=True, text=True,
                              check=True).stdout.splitlines()
    text, data, bss = (int(v) for v in berkeley[1].split()[:3])
    flash = text + data  # what the object adds to flash (rodata counts as text)
    assert flash >= len(model) and bss == 0
    with capsys.disabled():
        print(f"\n[cortex-m4] model_data.o: flash {flash} bytes (text {text}, data {data}, "
              f"bss {bss}) for a {len(model)}-byte model, arm-none-eabi-size")


def test_write_c_array_names_its_arena_constant(tmp_path):
    """A second model in the same firmware (the audio front end) takes its own arena constant."""
    h, _ = mcu.write_c_array(b"\x00" * 8, tmp_path, name="g_frontend", arena_bytes=4096, header="f.h",
                             source="f.cc", arena_name="kFrontendArenaSize")
    assert "constexpr unsigned int kFrontendArenaSize = 4096;" in h.read_text()
    assert "kTensorArenaSize" not in h.read_text()
    with pytest.raises(ValueError, match="not a C identifier"):
        mcu.write_c_array(b"\x00" * 8, tmp_path, arena_bytes=16, arena_name="k Arena")


def test_write_c_array_without_arena_and_custom_names(tmp_path):
    h, c = mcu.write_c_array(b"\x00\x01\xfe\xff" * 7, tmp_path, name="kws_model",
                             arena_bytes=None, header="kws.h", source="kws.cc")
    assert "kTensorArenaSize" not in h.read_text()
    assert '#include "kws.h"' in c.read_text()
    assert "const unsigned int kws_model_len = 28;" in c.read_text()
    assert mcu.read_c_array(c) == b"\x00\x01\xfe\xff" * 7
    h2, _ = mcu.write_c_array(b"\x01", tmp_path, arena_bytes=12345)
    assert "constexpr unsigned int kTensorArenaSize = 12345;" in h2.read_text()
    assert "not measured" in h2.read_text()
    with pytest.raises(ValueError):
        mcu.write_c_array(b"\x01", tmp_path, name="1bad", arena_bytes=None)
    with pytest.raises(ValueError):
        mcu.write_c_array(b"\x01", tmp_path, arena_bytes=None, source="../x.cc")


def test_read_c_array_detects_a_length_mismatch(tmp_path):
    src = tmp_path / "bad.cc"
    src.write_text("alignas(16) const unsigned char g_model[] = {0x01, 0x02};\n"
                   "const unsigned int g_model_len = 3;\n")
    with pytest.raises(ConversionError, match="g_model_len says 3"):
        mcu.read_c_array(src)


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    h, c = mcu.write_c_array(b"\x01\x02", tmp_path, arena_bytes=None)
    before = c.read_text()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(mcu.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        mcu.write_c_array(b"\x03\x04", tmp_path, arena_bytes=None)
    assert c.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_data.cc", "model_data.h"]


# --------------------------------------------------------------------------------- arena


def test_measured_arena_runs_and_a_much_smaller_one_fails(tiny_models, arena):
    path = tiny_models.full_int8_tflite
    assert arena.min_bytes > 0 and arena.min_bytes % 16 == 0
    assert arena.recommended_bytes >= arena.min_bytes and arena.recommended_bytes % 16 == 0
    assert arena.recommended_bytes - arena.min_bytes >= arena.margin_bytes
    assert arena.pointer_bits == 64 and 1 <= arena.runs <= 16
    assert arena.reported_total_bytes and arena.reported_total_bytes > 0
    ok = mcu.try_arena(path, arena.recommended_bytes)
    assert ok.ok and ok.returncode == 0 and ok.error == ""
    assert mcu.try_arena(path, arena.min_bytes).ok
    # 16-byte resolution: 16 bytes less no longer works
    assert not mcu.try_arena(path, arena.min_bytes - 16).ok
    small = mcu.try_arena(path, arena.min_bytes // 4, timeout_s=30)
    assert not small.ok and small.returncode not in (0, None)  # failed, did not hang
    assert small.error


def test_arena_measurement_is_cached_by_model_bytes(tiny_models, tmp_path, monkeypatch):
    """With $EDGEKIT_ARENA_CACHE set, the same bytes (at any path) are not searched again; other
    bytes or other search settings are, and without the variable nothing is cached."""
    monkeypatch.setenv(mcu.ARENA_CACHE_ENV, str(tmp_path / "cache"))
    first = mcu.measure_arena(tiny_models.full_int8_tflite)
    (entry,) = (tmp_path / "cache").iterdir()
    assert re.fullmatch(r"arena-[0-9a-f]{64}\.json", entry.name)

    def searched(*args, **kwargs):
        raise AssertionError("searched again")

    monkeypatch.setattr(mcu, "try_arena", searched)
    same = tmp_path / "same.tflite"
    same.write_bytes(tiny_models.full_int8_tflite.read_bytes())
    assert mcu.measure_arena(same) == first
    with pytest.raises(AssertionError, match="searched again"):
        mcu.measure_arena(same, margin_bytes=first.margin_bytes + 16)
    other = tmp_path / "other.tflite"
    other.write_bytes(tiny_models.int8_tflite.read_bytes())
    with pytest.raises(AssertionError, match="searched again"):
        mcu.measure_arena(other)
    monkeypatch.delenv(mcu.ARENA_CACHE_ENV)
    with pytest.raises(AssertionError, match="searched again"):
        mcu.measure_arena(same)


def test_a_tiny_arena_crash_is_reported_not_raised(tiny_models):
    trial = mcu.try_arena(tiny_models.full_int8_tflite, 16, timeout_s=30)
    assert not trial.ok and trial.returncode not in (0, None) and trial.error


class _FakeTrials:
    """Stands in for try_arena: works from `threshold` bytes up; reports `reported`."""

    def __init__(self, threshold: int, reported: int | None):
        self.threshold, self.reported, self.calls = threshold, reported, []

    def __call__(self, path, n, *, timeout_s=60.0):
        self.calls.append(n)
        ok = n >= self.threshold
        return mcu.ArenaTrial(n, ok, 0 if ok else -11, self.reported if ok else None,
                              64 if ok else None, "fake" if ok else None,
                              "" if ok else "too small (killed by SIGSEGV)", 0.0)


@pytest.mark.parametrize("threshold, reported", [
    (2336, 2336),       # reported total is exact (this tflite-micro, tiny CNN)
    (2841, 2336),       # about 500 B more than reported is needed
    (1000, 2336),       # reported over-estimates
    (70_001, None),     # nothing reported: plain bisection
])
def test_arena_search_finds_the_threshold_with_few_runs(tmp_path, monkeypatch, threshold,
                                                        reported):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    fake = _FakeTrials(threshold, reported)
    monkeypatch.setattr(mcu, "try_arena", fake)
    m = mcu.measure_arena(model, margin_bytes=100)
    assert m.min_bytes == -(-threshold // 16) * 16
    assert m.min_bytes in fake.calls and m.min_bytes - 16 in fake.calls + [0]
    assert m.recommended_bytes == -(-(m.min_bytes + 100) // 16) * 16
    assert m.runs == len(fake.calls) <= 20
    if reported:
        assert m.runs <= 16


def test_arena_search_fails_when_upper_bound_is_too_small(tmp_path, monkeypatch):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    monkeypatch.setattr(mcu, "try_arena", _FakeTrials(10_000, None))
    with pytest.raises(ConversionError, match=r"even with 4 KiB arena: too small \(killed by"):
        mcu.measure_arena(model, upper_bytes=4096)


def test_the_mcu_file_ships_without_names_and_keeps_them_beside_it(digits_small, tiny_models, tmp_path):
    """cortex-m4 ships model_int8.tflite (and its C array) without the tensor names TFLite Micro
    never reads; model_int8.tensor_names.json beside it holds them, so the per-layer error still
    names Keras layers. ``mcu_strip_names: false`` ships the same model with its names."""
    import json

    from edgekit import convert
    from edgekit.data import Dataset
    from edgekit.fitting import load_model
    from edgekit.recipe import ConvertConfig, load_target
    from edgekit.tflite_file import names_path, read, read_named, with_names

    x_tr, y_tr, x_te, y_te = digits_small
    data = Dataset("digits", x_tr, y_tr, x_tr[:0], y_tr[:0], x_te, y_te, 10)
    model = load_model(tiny_models.keras_path)
    arts = {}
    for strip in (True, False):
        out = tmp_path / str(strip) / "targets" / "cortex-m4"
        res = convert.convert_target(load_target("cortex-m4"), {"float": model, "qat": None}, data,
                                     ConvertConfig(representative_samples=50, mcu_strip_names=strip), out,
                                     seed=0, eval_npz=tiny_models.eval_npz)
        arts[strip] = res.artifacts[0]
    shipped, kept = arts[True], arts[False]
    blob = shipped.path.read_bytes()
    assert all(t.name == "" for t in read(blob).subgraphs[0].tensors)
    assert mcu.read_c_array(shipped.path.parent / "model_data.cc") == blob
    side = names_path(shipped.path)
    saved = kept.path.stat().st_size - len(blob)
    assert shipped.extra["tensor_names"] == {"file": side.name, "bytes_saved": saved} and side.is_file()
    assert read_named(shipped.path) == kept.path.read_bytes()           # the names put back: the kept file
    assert with_names(blob, json.loads(side.read_text())) == kept.path.read_bytes()
    assert len(blob) < kept.path.stat().st_size and not names_path(kept.path).exists()
    assert "tensor_names" not in kept.extra
    layers = [[r["layer"] for r in a.extra["per_layer_error"]["layers"]] for a in (shipped, kept)]
    assert layers[0] == layers[1] and layers[0][-1] == model.layers[-1].name
    assert shipped.extra["arena"]["min_bytes"] == kept.extra["arena"]["min_bytes"]  # names never reach the arena
