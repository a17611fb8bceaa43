"""What to ship (report.json ``ship``, the "What to ship" section) and pruning's effect on flash,
on the session's finished tiny run; the MCU header's I/O and preprocessing constants compiled by
gcc/g++ as C and C++."""

from __future__ import annotations

import hashlib
import subprocess

import pytest

from edgekit import mcu
from edgekit.opcosts import io_quantization
from edgekit.report import view


def test_every_target_names_its_files_with_their_sha256(finished_run):
    report, out = finished_run.report, finished_run.out
    assert set(report["ship"]) == {t["name"] for t in report["targets"]}
    for t in report["targets"]:
        plan = t["ship"]
        assert len(plan["artifacts"]) == 1 + len(t.get("variants", []))
        for a in plan["artifacts"]:
            assert a["files"], (t["name"], a["format"])
            for f in a["files"]:
                data = (out / f["path"]).read_bytes()
                assert hashlib.sha256(data).hexdigest() == f["sha256"] and len(data) == f["bytes"]
        rec = plan["recommended"]
        passing = [a for a in plan["artifacts"] if a["passes"]]
        assert rec is not None and rec["size_bytes"] == min(a["size_bytes"] for a in passing)
        assert report["ship"][t["name"]] == rec
    m4 = next(t for t in report["targets"] if t["kind"] == "mcu")
    rec = m4["ship"]["recommended"]
    assert [p.rsplit("/", 1)[1] for p in rec["files"]] == ["model_data.cc", "model_data.h", "op_resolver.h"]
    art = m4["ship"]["artifacts"][0]
    assert art["arena_bytes"] == m4["arena_bytes"] and art["input"]["scale"] == m4["input"]["scale"]
    assert "model array alone" in m4["ship"]["flash_note"] and "TensorFlow Lite Micro runtime" in m4["ship"]["flash_note"]
    # the header carries what the evaluator measured the model's input and output with
    header = (out / "targets" / m4["name"] / "model_data.h").read_text()
    for side, name in (("input", "kInput"), ("output", "kOutput")):
        q = m4[side]
        assert f"constexpr int {name}ZeroPoint = {q['zero_point']};" in header
        assert f"constexpr float {name}Scale = {float(q['scale']):.9g}" in header
    assert "Preprocessing: none" in header  # digits is not normalized by the data loader


def test_report_pages_say_what_to_ship_and_what_pruning_did(finished_run):
    report, out = finished_run.report, finished_run.out
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    for text in (md, html):
        assert "What to ship" in text and "model array alone" in text
        for t in report["targets"]:
            for f in t["ship"]["artifacts"][0]["files"]:
                assert f["sha256"] in text
    note = view.pruning_flash_note(report)
    stages = {s["name"]: s for s in report["stages"]}
    assert stages["pruned"]["size_bytes"] >= 0.95 * stages["student"]["size_bytes"]  # dense storage, measured
    assert stages["pruned"]["gzip_bytes"] < stages["student"]["gzip_bytes"]
    assert "does not shrink" in note and note in md and "only its compressed (gzip) size" in note
    assert "does not shrink" in html and dict(view.sparsity_facts(report))["flash"] == note


def test_header_io_and_preprocessing_constants_compile_as_c_and_cpp(tiny_models, tmp_path):
    from conftest import require_tool

    require_tool("gcc", hint="apt-get install gcc; CI installs it")
    require_tool("g++", hint="apt-get install g++; CI installs it")
    blob = tiny_models.full_int8_tflite.read_bytes()
    io = io_quantization(blob)
    assert io["input"]["dtype"] == "int8" and io["input"]["scale"] > 0
    pre = {"normalize": "standard", "shape": [2], "offset": [0.5, -3], "scale": [2, 1e-3]}
    h, c = mcu.write_c_array(blob, tmp_path, arena_bytes=4096, io=io, preprocess=pre)
    (tmp_path / "m.c").write_text('#include "model_data.h"\nint main(void) {\n'
                                  "  static const float off[] = EDGEKIT_PREPROCESS_OFFSET_INIT;\n"
                                  "  static const float sc[] = EDGEKIT_PREPROCESS_SCALE_INIT;\n"
                                  "  float x = (1.0f - off[1]) / sc[1];\n"
                                  "  int q = (int)(x / kInputScale) + kInputZeroPoint;\n"
                                  "  return (q + (int)kPreprocessLen + kOutputZeroPoint) > 1000000 ? 1 : 0;\n}\n")
    (tmp_path / "m.cc").write_text('#include "model_data.h"\n#include <cmath>\n#include <cstdio>\nint main() {\n'
                                   "  static_assert(kPreprocessLen == 2, \"two features\");\n"
                                   "  float x = (1.0f - kPreprocessOffset[0]) / kPreprocessScale[0];\n"
                                   "  std::printf(\"%ld\\n\", std::lround(x / kInputScale) + kInputZeroPoint);\n"
                                   "  return 0;\n}\n")
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-I", str(tmp_path), "-c",
                    str(tmp_path / "m.c"), "-o", str(tmp_path / "m.o")], check=True)
    subprocess.run(["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-I", str(tmp_path), str(tmp_path / "m.cc"),
                    str(c), "-o", str(tmp_path / "m")], check=True)
    # a raw 1.0 of feature 0: (1.0 - 0.5) / 2 = 0.25, quantized with the model's own input scale
    got = int(subprocess.run([str(tmp_path / "m")], capture_output=True, text=True, check=True).stdout)
    assert got == round(0.25 / io["input"]["scale"]) + io["input"]["zero_point"]
