"""What a command prints: edgekit's lines on the terminal, native and library output in RUN/logs/.

The noise is real (TensorFlow's import lines, the converter's chatter, tflite-micro's arena
dump), so each test also checks that the log file holds it: quiet because redirected, not
because nothing was said.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import copy_run

# lines that come from TensorFlow, absl, oneDNN, CUDA, the converter or Python warnings
NOISE = re.compile(r"^[IWEF]\d{4} |absl::|oneDNN|cuda|cuInit|tensorflow|fully_quantize|UserWarning|warnings\.warn",
                   re.IGNORECASE | re.MULTILINE)


def noise_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if NOISE.search(ln)]


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "EDGEKIT_VERBOSITY")}
    return subprocess.run([sys.executable, "-m", "edgekit.cli", *args], capture_output=True, text=True,
                          timeout=900, env=env, cwd=cwd)


@pytest.mark.slow  # process-level (what a terminal sees from an edgekit process)
def test_a_stage_command_prints_only_edgekit_lines_and_logs_the_rest(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    proc = _cli("convert", str(run.out), "--target", "cortex-m4")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert noise_lines(proc.stderr) == [], proc.stderr
    assert "convert:cortex-m4" in proc.stderr and "log:" in proc.stderr
    logs = sorted((run.out / "logs").glob("run-*.log"))
    assert logs, "no log file in RUN/logs"
    text = logs[-1].read_text(errors="replace")
    assert noise_lines(text), f"the log holds no native output, so this test proves nothing:\n{text[:2000]}"
    assert str(logs[-1]) in proc.stderr


@pytest.mark.slow  # process-level (what a terminal sees from an edgekit process)
def test_quiet_prints_nothing_on_success(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    proc = _cli("-q", "run", str(run.recipe_path), "--out", str(run.out), "--resume")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr == "" and proc.stdout == ""


def test_console_gives_descriptor_2_back_and_removes_an_unused_log(tmp_path):
    code = ("import os, sys\n"
            "from edgekit.console import Console\n"
            "c = Console(0).start()\n"
            "os.write(2, b'native noise\\n')\n"
            "print('python line', file=sys.stderr)\n"
            "path = c.log_path\n"
            "c.close()\n"
            "os.write(2, b'after close\\n')\n"
            "print(path.exists(), file=sys.stdout)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["python line", "after close"]
    assert proc.stdout.strip() == "False"


def test_children_inherit_the_level():
    code = ("import os, subprocess, sys\n"
            "from edgekit.console import Console\n"
            "c = Console(2).start()\n"
            "child = subprocess.run([sys.executable, '-c', 'from edgekit.console import level_from_env; "
            "print(level_from_env())'], capture_output=True, text=True)\n"
            "c.close()\n"
            "print(child.stdout.strip(), os.environ.get('EDGEKIT_VERBOSITY'))\n")
    env = {k: v for k, v in os.environ.items() if k != "EDGEKIT_VERBOSITY"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["2", "None"]


@pytest.mark.slow
def test_verbose_shows_native_output(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    proc = _cli("-v", "convert", str(run.out), "--target", "cortex-m4")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert noise_lines(proc.stderr), proc.stderr[-3000:]
