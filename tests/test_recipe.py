"""Recipes and target profiles: valid ones load, broken ones give one precise line each."""

from __future__ import annotations

import pytest

from edgekit.errors import RecipeError
from edgekit.recipe import list_targets, load_recipe, load_target, resolved_yaml

BROKEN = [
    # (recipe text, expected fragment of the message)
    ("name: x\nteacher: {epochs: 3\n", "not valid YAML (line 3"),
    ("- a\n- b\n", "expected a mapping of keys at the top level"),
    ("seed: 1\n", "name: required key is missing"),
    ("name: x\nprun: {target_sparsity: 0.5}\n", "prun: unknown key; did you mean 'prune'?"),
    ("name: x\nprune: {target_sparsty: 0.5}\n", "prune.target_sparsty: unknown key; did you mean 'target_sparsity'?"),
    ("name: x\nprune: {target_sparsity: 1.2}\n", "prune.target_sparsity: 1.2 is out of range"),
    ("name: x\nprune: {target_sparsity: -0.1}\n", "prune.target_sparsity: -0.1 is out of range"),
    ("name: x\nteacher: {epochs: many}\n", "teacher.epochs: input should be a valid integer"),
    ("name: x\nteacher: {optimizer: adamw}\n", "teacher.optimizer: 'adamw' is not allowed"),
    ("name: x\nteacher: {strategy: tpu}\n", "teacher.strategy: 'tpu' is not allowed"),
    ("name: x\nteacher: {learning_rate: 0}\n", "teacher.learning_rate: 0 is out of range"),
    ("name: x\nteacher: {early_stopping: {patience: 0}}\n", "teacher.early_stopping.patience: 0 is out of range"),
    ("name: x\nstudent: {temperature: -1}\n", "student.temperature: -1 is out of range"),
    ("name: x\nstudent: {alpha: 1.5}\n", "student.alpha: 1.5 is out of range"),
    ("name: x\ndata: {source: cifar}\n", "data.source: 'cifar' is not a known source"),
    ("name: x\ntargets: [rpi5]\n", "targets.0: unknown target 'rpi5'; did you mean 'rpi4'?"),
    ("name: x\ntargets: rpi4\n", "targets: input should be a valid list"),
    ("name: 'has space'\n", "name: 'has space' is not a usable name"),
    ("name: x\nevaluate: {runs: 0}\n", "evaluate.runs: 0 is out of range"),
]


@pytest.mark.parametrize("text,expected", BROKEN, ids=[str(i) for i in range(len(BROKEN))])
def test_broken_recipe_message_names_file_and_key(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: "), msg
    assert expected in msg, msg
    assert info.value.exit_code == 2


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_quickstart_resolves_with_defaults():
    r = load_recipe("recipes/quickstart.yaml")
    assert r.targets == ["mobile", "rpi4", "cortex-m4"]
    assert r.prune is not None and r.prune.target_sparsity == 0.6
    text = resolved_yaml(r)
    assert "representative_samples" in text  # defaults are filled in


def test_stage_can_be_skipped(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("name: x\nprune: null\nqat: null\n")
    r = load_recipe(p)
    assert r.prune is None and r.qat is None


@pytest.mark.parametrize("name", list_targets())
def test_builtin_targets_load(name):
    t = load_target(name)
    assert t.name == name
    assert t.board, "every built-in profile names the real board its budgets come from"
    assert t.budget.flash_bytes and t.budget.ram_bytes


def test_target_by_path(tmp_path):
    p = tmp_path / "myboard.yaml"
    p.write_text("name: myboard\nkind: mcu\nruntime: tflite_micro\nformats: [tflite-full-int8]\n"
                 "budget: {flash_bytes: 1000, ram_bytes: 1000}\n")
    assert load_target(str(p)).budget.flash_bytes == 1000
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: x\ntargets: [myboard.yaml]\n")
    assert load_recipe(recipe).targets == ["myboard.yaml"]


def test_bad_target_profile(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("name: t\nkind: fpga\n")
    with pytest.raises(RecipeError, match=r"t.yaml: kind: unknown target kind 'fpga'; known kinds: mcu, mobile, rpi$"):
        load_target(str(p))


def test_readme_recipe_reference_is_generated_from_schema():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("gen_readme", "tools/gen_readme.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    readme = (Path(__file__).resolve().parent.parent / "docs" / "recipes.md").read_text()
    assert mod.render(readme) == readme, "docs/recipes.md recipe reference is stale: run python tools/gen_readme.py"


def test_structure_must_match_target(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("name: x\nprune: {structure: '2:4', target_sparsity: 0.6}\n")
    with pytest.raises(RecipeError, match=r"prune: structure '2:4' means target_sparsity 0.5, got 0.6"):
        load_recipe(p)


def test_yaml_alias_bomb_is_refused(tmp_path):
    lines = ["name: x", "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for i in range(1, 12):
        prev = "a" if i == 1 else f"a{i - 1}"
        lines.append(f"a{i}: &a{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]")
    p = tmp_path / "bomb.yaml"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecipeError, match="YAML aliases .* possible alias bomb"):
        load_recipe(p)


def test_a_yaml_text_read_again_is_the_same_and_a_changed_file_is_read_anew(tmp_path):
    """Parses are memoised by text (a run reads its profiles many times): each read gets its own
    data, an error names the file it came from, and a file whose text changed is parsed again."""
    from edgekit.recipe import _read_yaml

    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("name: x\nteacher: {epochs: 3}\n")
    first = _read_yaml(a, "recipe")
    first["teacher"]["epochs"] = 99  # a caller that changes what it got changes nothing else
    assert _read_yaml(a, "recipe") == {"name": "x", "teacher": {"epochs": 3}}
    a.write_text("name: x\nteacher: {epochs: 4}\n")
    assert load_recipe(a).teacher.epochs == 4
    for path in (a, b):
        path.write_text("name: x\nname: y\n")
        with pytest.raises(RecipeError, match=rf"^{path}: .*name"):
            load_recipe(path)
    b.write_text("{" * 60 + "}" * 60 + "\n")
    with pytest.raises(RecipeError, match=rf"^{b}: YAML nested 60 levels deep .* a target profile is a few"):
        load_target(str(b))


def test_non_utf8_and_huge_numbers(tmp_path):
    p = tmp_path / "latin1.yaml"
    p.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(RecipeError, match="not a text file"):
        load_recipe(p)
    p = tmp_path / "huge.yaml"
    p.write_text("name: x\nteacher: {epochs: 100000000000000000000000000000}\n")
    with pytest.raises(RecipeError, match="teacher.epochs: .* is out of range"):
        load_recipe(p)


@pytest.mark.parametrize("prune, message", [
    ("{structure: channels, target_sparsity: 0.0}", r"prune: structure 'channels' removes target_sparsity of the "
                                                    r"channels: set target_sparsity above 0"),
    ("{structure: channels, frequency: 10}", r"prune: structure 'channels' .*frequency apply to magnitude pruning"),
    ("{structure: channels, schedule: constant}", r"schedule apply to magnitude pruning only"),
    ("{structure: rows}", r"prune.structure"),
])
def test_channel_structure_combinations_are_checked(tmp_path, prune, message):
    p = tmp_path / "r.yaml"
    p.write_text(f"name: x\nprune: {prune}\n")
    with pytest.raises(RecipeError, match=message):
        load_recipe(p)


def test_channel_structure_is_accepted(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("name: x\nprune: {structure: channels, target_sparsity: 0.5}\n")
    r = load_recipe(p)
    assert (r.prune.structure, r.prune.target_sparsity) == ("channels", 0.5)
