"""edgekit.targets: every target kind behind one interface, in a registry that fails loudly.

A toy kind registered inside a test is reached by the same dispatch the pipeline uses
(convert_target, the budget check, preflight's op check), so a new kind is one module.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekit import convert, evaluate, preflight, targets
from edgekit.errors import ConversionError, RecipeError
from edgekit.recipe import Budget, ConvertConfig, load_target


@pytest.mark.parametrize("kind", targets.known())
def test_every_registered_kind_converts(kind):
    spec = targets.get(kind)
    assert spec.name == kind
    assert type(spec).convert is not targets.TargetKindSpec.convert  # it converts


def test_the_kinds_are_found_from_the_package_modules():
    """Registered by discovery: every module of edgekit/targets/ but base defines one kind, and
    no list elsewhere names them (a new kind is its module plus a profile)."""
    import pkgutil

    modules = sorted(m.name for m in pkgutil.iter_modules(targets.__path__) if m.name != "base")
    assert sorted(type(targets.get(k)).__module__.rsplit(".", 1)[1] for k in targets.known()) == modules


def test_a_profile_names_any_registered_kind_and_only_those(tmp_path):
    profile = tmp_path / "toy.yaml"
    profile.write_text("name: toy\nkind: toy-npu\nbudget: {flash_bytes: 1000}\n")
    with targets.registered(ToyNpu()):
        assert load_target(str(profile)).kind == "toy-npu"
    with pytest.raises(RecipeError, match=r"kind: unknown target kind 'toy-npu'; known kinds: mcu, mobile, rpi"):
        load_target(str(profile))


def test_the_builtin_kinds_differ_where_they_should():
    assert targets.known() == ["mcu", "mobile", "rpi"]
    assert [targets.get(k).ram_key for k in ("mobile", "rpi", "mcu")] == ["rss_growth_bytes", "rss_growth_bytes",
                                                                          "arena_bytes"]
    assert [k for k in targets.known() if targets.get(k).ssh_bundle] == ["rpi"]
    assert [k for k in targets.known() if targets.get(k).takes_given_onnx] == ["mobile"]
    assert [k for k in targets.known() if targets.get(k).checks_ops()] == ["mcu"]


def test_an_unknown_kind_lists_the_known_ones():
    with pytest.raises(RecipeError, match=r"unknown target kind 'npu'; known kinds: mcu, mobile, rpi$"):
        targets.get("npu")


def test_a_kind_registered_twice_is_refused():
    with pytest.raises(ValueError, match="target kind 'mcu' is already registered"):
        targets.register(targets.get("mcu").__class__())
    assert targets.get("mcu").ram_key == "arena_bytes"  # the first one stays

    class Nameless(targets.TargetKindSpec):
        name = ""

    with pytest.raises(ValueError, match="needs a non-empty name"):
        targets.register(Nameless())


class ToyNpu(targets.TargetKindSpec):
    """A kind that exists only in this test: writes the int8 model under its own name."""

    name = "toy-npu"
    ram_key = "npu_sram_bytes"
    ram_label = "NPU SRAM"
    fail = False

    def convert(self, source, profile, ctx):
        p = ctx.out_dir / "model.npu"
        p.write_bytes(source.tflite("int8"))
        if self.fail:
            raise ConversionError("toy-npu: the NPU compiler refused the model")
        return [convert.Artifact(p, "npu-int8", "toy_runtime")], [p]


class Source:
    """A stand-in source: the bytes a real source's ``tflite(mode)`` returns."""

    onnx_only = False

    def __init__(self):
        self.modes = []

    def tflite(self, mode):
        self.modes.append(mode)
        return b"TFL3-" + mode.encode()


def _toy_profile():
    return load_target("rpi4").model_copy(update={"name": "toy", "kind": "toy-npu"})


def test_convert_and_budget_dispatch_reach_a_kind_registered_in_a_test(tmp_path):
    profile = _toy_profile()
    source = Source()
    with targets.registered(ToyNpu()):
        assert "toy-npu" in targets.known()
        out = convert.convert_target(profile, source, None, ConvertConfig(), tmp_path / "toy", seed=0,
                                     eval_npz=tmp_path / "eval.npz")
        assert source.modes == ["int8"]
        assert [(a.path.name, a.format, a.runtime) for a in out.artifacts] == [("model.npu", "npu-int8", "toy_runtime")]
        assert out.files == [tmp_path / "toy" / "model.npu"] and out.profile is profile
        budget = evaluate.check_budget({"size_bytes": 10, "npu_sram_bytes": 5000, "rss_growth_bytes": 1},
                                       Budget(ram_bytes=4096), profile.kind)
        assert budget["violations"] == ["ram: NPU SRAM 5000 bytes > budget 4096 bytes"]
        assert preflight.check_targets(None, [profile]) == []  # no op check: the model is not even converted
    with pytest.raises(RecipeError, match="unknown target kind 'toy-npu'"):
        targets.get("toy-npu")  # gone after the block


def test_a_failing_kind_leaves_no_files_behind(tmp_path):
    toy = ToyNpu()
    toy.fail = True
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "mine.txt").write_text("a user's file")
    with targets.registered(toy), pytest.raises(ConversionError, match="NPU compiler refused"):
        convert.convert_target(_toy_profile(), Source(), None, ConvertConfig(), tmp_path / "toy", seed=0,
                               eval_npz=tmp_path / "eval.npz")
    assert sorted(p.name for p in (tmp_path / "toy").iterdir()) == ["mine.txt"]


def test_an_unknown_kind_fails_before_anything_is_written(tmp_path):
    profile = _toy_profile()
    with pytest.raises(RecipeError, match="known kinds: mcu, mobile, rpi"):
        convert.convert_target(profile, Source(), None, ConvertConfig(), tmp_path / "toy", seed=0,
                               eval_npz=Path("eval.npz"))
    assert not (tmp_path / "toy").exists()
