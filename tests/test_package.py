"""Target profiles and example recipes ship inside the package (edgekit/data/targets and
edgekit/data/recipes), `edgekit recipes list` / `recipes init`, and (slow) a wheel built from
this checkout, installed into a clean virtualenv outside it, running a recipe to a target.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from edgekit.cli import main
from edgekit.recipe import RECIPES_DIR, TARGETS_DIR, list_recipes, list_targets, load_recipe, load_target

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- package data


@pytest.mark.parametrize("kind", ["targets", "recipes"])
def test_package_data_is_the_top_level_folder(kind):
    """In a checkout edgekit/data/KIND is a relative symlink to the top-level KIND/ folder, so the
    two can never differ and a wheel (which copies the files) ships exactly what the checkout has."""
    packaged = ROOT / "edgekit" / "data" / kind
    assert packaged.is_symlink() and os.readlink(packaged) == f"../../{kind}"
    assert packaged.resolve() == (ROOT / kind).resolve()
    assert {p.name for p in packaged.glob("*.yaml")} == {p.name for p in (ROOT / kind).glob("*.yaml")}
    assert (TARGETS_DIR if kind == "targets" else RECIPES_DIR).resolve() == (ROOT / kind).resolve()


def test_pyproject_ships_profiles_and_recipes():
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["edgekit"]
    assert "data/targets/*.yaml" in data and "data/recipes/*.yaml" in data


def test_every_shipped_profile_and_recipe_loads():
    assert set(list_targets()) >= {"mobile", "rpi4", "cortex-m4"}
    for name in list_targets():
        assert load_target(name).name == name
    assert "quickstart" in list_recipes()
    for name in list_recipes():
        assert load_recipe(RECIPES_DIR / f"{name}.yaml").name


# ----------------------------------------------------------------------------- recipes list / init


def test_recipes_list_names_every_shipped_recipe():
    res = CliRunner().invoke(main, ["recipes", "list", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [r["name"] for r in rows] == list_recipes()
    quick = next(r for r in rows if r["name"] == "quickstart")
    assert quick["summary"].startswith("Quickstart: scikit-learn digits") and Path(quick["file"]).is_file()
    res = CliRunner().invoke(main, ["recipes", "list"])
    assert res.exit_code == 0 and len(res.stdout.splitlines()) == len(rows)
    assert res.stdout.splitlines()[rows.index(quick)].startswith("quickstart ")


def test_recipes_init_copies_and_never_overwrites(tmp_path, monkeypatch):
    runner = CliRunner()
    dest = tmp_path / "mine.yaml"
    res = runner.invoke(main, ["recipes", "init", "quickstart", str(dest)])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(dest)
    assert dest.read_bytes() == (RECIPES_DIR / "quickstart.yaml").read_bytes()
    # into a folder: FOLDER/NAME.yaml; without DEST: ./NAME.yaml
    res = runner.invoke(main, ["recipes", "init", "mnist1d", str(tmp_path)])
    assert res.exit_code == 0 and (tmp_path / "mnist1d.yaml").is_file()
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    res = runner.invoke(main, ["recipes", "init", "anomaly-mcu"])
    assert res.exit_code == 0 and (tmp_path / "sub" / "anomaly-mcu.yaml").is_file()
    # an existing file is refused and left as it was, whatever it holds
    dest.write_text("my own work\n")
    res = runner.invoke(main, ["recipes", "init", "quickstart", str(dest)])
    assert res.exit_code == 2 and "already exists; edgekit does not overwrite it" in res.output
    assert dest.read_text() == "my own work\n"
    (tmp_path / "dangling.yaml").symlink_to(tmp_path / "nowhere.yaml")
    res = runner.invoke(main, ["recipes", "init", "quickstart", str(tmp_path / "dangling.yaml")])
    assert res.exit_code == 2 and not (tmp_path / "nowhere.yaml").exists()
    res = runner.invoke(main, ["recipes", "init", "quickstrt", str(tmp_path / "x.yaml")])
    assert res.exit_code == 2 and "unknown example recipe 'quickstrt'; did you mean 'quickstart'?" in res.output
    assert not (tmp_path / "x.yaml").exists()


# ----------------------------------------------------------------------------- the wheel (slow)


TINY_OVERRIDES = {"teacher": {"epochs": 2, "batch_size": 64}, "student": {"epochs": 2, "batch_size": 64,
                                                                          "baseline": False},
                  "prune": {"epochs": 1, "batch_size": 64}, "qat": {"epochs": 1, "batch_size": 64},
                  "targets": ["cortex-m4"], "evaluate": {"warmup": 1, "runs": 3}}


@pytest.mark.slow
def test_wheel_installed_outside_the_checkout_runs_a_recipe_to_a_target(tmp_path):
    """Build the wheel from a copy of the tracked layout, install it (not editable) into a fresh
    virtualenv outside the checkout, and run `edgekit targets list`, `recipes init` and a tiny
    recipe to cortex-m4 there. The virtualenv sees this environment's third-party packages (so
    TensorFlow is not installed again) through a .pth path line, which adds the directory but
    runs none of its .pth hooks: the editable install of the checkout stays invisible, and the
    test checks that `edgekit` is imported from the new virtualenv."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("edgekit", "targets", "recipes"):
        shutil.copytree(ROOT / name, src / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "--no-index", "-q", "-w", str(wheels), str(src)], capture_output=True, text=True,
                           env=env, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("edgekit-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env, timeout=300)
    py = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    deps = sysconfig.get_paths()["purelib"]   # this environment's packages, without running its .pth hooks
    (purelib / "zz_edgekit_test_deps.pth").write_text(f"{deps}\n")
    inst = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert inst.returncode == 0, inst.stderr[-3000:]

    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run([str(py), "-c", "import edgekit; print(edgekit.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout
    assert not Path(where.stdout.strip()).is_relative_to(ROOT)
    exe = str(venv / "bin" / "edgekit")

    listed = subprocess.run([exe, "targets", "list"], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert [ln.split()[0] for ln in listed.stdout.splitlines()] == list_targets()
    recipes = subprocess.run([exe, "recipes", "list"], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert recipes.returncode == 0 and [ln.split()[0] for ln in recipes.stdout.splitlines()] == list_recipes()

    init = subprocess.run([exe, "recipes", "init", "quickstart", "r.yaml"], cwd=work, env=env, capture_output=True,
                          text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    doc = yaml.safe_load((work / "r.yaml").read_text())
    for key, value in TINY_OVERRIDES.items():
        doc[key] = {**doc[key], **value} if isinstance(value, dict) else value
    (work / "r.yaml").write_text(yaml.safe_dump(doc))
    run = subprocess.run([exe, "-q", "run", "r.yaml", "--out", "run", "--json"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout)
    (target,) = report["targets"]
    assert target["name"] == "cortex-m4" and target["format"] == "tflite-full-int8"
    assert target["arena_bytes"] > 0 and target["accuracy"] > 0.5
    assert (work / "run" / "targets" / "cortex-m4" / "model_data.cc").is_file()
    print(f"\nwheel {wheel.name} ({wheel.stat().st_size} B) in {venv}: cortex-m4 accuracy "
          f"{target['accuracy']:.4f}, {target['size_bytes']} B, arena {target['arena_bytes']} B")
