"""A run whose data has an audio front end (``data.frontend: mfcc`` over a ``wav:`` folder) ships
``frontend.tflite`` with every target (a C array of it for the MCU), lists it with its sha256 in
what to ship, and its Pi bundle classifies .wav files through the one-file evaluator."""

from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit import audio
from edgekit.cli import main

ROOT = Path(__file__).resolve().parent.parent
EVALUATOR = ROOT / "edgekit" / "ondevice" / "evaluate.py"


def write_wav(path: Path, x: np.ndarray, rate: int = 16000, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = (np.clip(x, -1, 1 - 2 ** -15) * 32768).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.repeat(pcm[:, None], channels, 1).tobytes())
    return path


def tone(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(16000) / 16000
    return (0.5 * np.sin(2 * np.pi * rng.uniform(300, 1500) * t) + rng.normal(0, 0.01, t.size)).astype("float32")


def noise(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.2, 16000).astype("float32")


@pytest.fixture(scope="module")
def audio_run(tmp_path_factory):
    """20 clips (tones vs noise) -> mfcc -> cnn_tiny (3 epochs) -> rpi4, cortex-m4 and a mobile profile."""
    root = tmp_path_factory.mktemp("audio_run")
    for i in range(10):
        write_wav(root / "clips" / "noise" / f"n{i}.wav", noise(i))
        write_wav(root / "clips" / "tone" / f"t{i}.wav", tone(i))
    (root / "r.yaml").write_text(
        "name: tones\nseed: 0\n"
        "data: {source: 'wav:clips', frontend: mfcc, test_split: 0.3, val_split: 0.0}\n"
        "teacher: {model: cnn_tiny, epochs: 3, batch_size: 8, learning_rate: 0.01}\n"
        "student: null\nprune: null\nqat: null\n"
        "targets: [rpi4, cortex-m4, phone.yaml]\nevaluate: {warmup: 1, runs: 3}\n")
    (root / "phone.yaml").write_text("name: phone\nkind: mobile\nformats: [tflite-fp16]\n")
    out = root / "run"
    res = CliRunner().invoke(main, ["-q", "run", str(root / "r.yaml"), "--out", str(out), "--no-budget"])
    assert res.exit_code == 0, res.output
    return root, out, json.loads((out / "report.json").read_text())


def test_every_target_ships_the_front_end_with_its_sha256(audio_run):
    root, out, report = audio_run
    assert report["dataset"]["frontend"] == "mfcc"
    want = audio.frontend_tflite("mfcc")
    import hashlib

    sha = hashlib.sha256(want).hexdigest()
    assert {t["name"] for t in report["targets"]} == {"rpi4", "cortex-m4", "phone"}
    for t in report["targets"]:
        folder = out / "targets" / t["name"]
        assert (folder / "frontend.tflite").read_bytes() == want
        meta = json.loads((folder / "frontend.json").read_text())
        assert meta["sha256"] == sha and meta["params"] == audio.frontend_params("mfcc")
        assert (folder / "labels.txt").read_text() == "noise\ntone\n"
        files = {f["path"]: f for a in t["ship"]["artifacts"] for f in a["files"]}
        front = files[f"targets/{t['name']}/frontend.tflite"]
        assert front["sha256"] == sha and front["bytes"] == len(want) and "front end" in front["role"]
        rec = report["ship"][t["name"]]["files"] if "ship" in report and t["name"] in report["ship"] else None
        if rec is not None:
            assert f"targets/{t['name']}/frontend.tflite" in rec


def test_the_mcu_target_ships_the_front_end_as_a_c_array_with_its_own_arena(audio_run):
    from edgekit.mcu import model_ops, read_c_array

    _, out, report = audio_run
    folder = out / "targets" / "cortex-m4"
    assert read_c_array(folder / "frontend_data.cc") == audio.frontend_tflite("mfcc")
    header = (folder / "frontend_data.h").read_text()
    assert "g_frontend" in header and "kFrontendArenaSize" in header and "kTensorArenaSize" not in header
    meta = json.loads((folder / "frontend.json").read_text())
    assert meta["tflm_arena"]["min_bytes"] < 64_000
    resolver = (folder / "op_resolver.h").read_text()
    for op in model_ops(audio.frontend_tflite("mcu" if False else "mfcc")):
        assert f"// {op}" in resolver  # one resolver registers the model's and the front end's kernels
    t = next(t for t in report["targets"] if t["name"] == "cortex-m4")
    assert t["frontend"]["arena"]["min_bytes"] == meta["tflm_arena"]["min_bytes"]


def test_front_end_c_arrays_compile_beside_the_model_in_one_unit(audio_run, tmp_path):
    from conftest import require_tool

    require_tool("g++", hint="apt-get install g++; CI installs it")
    _, out, _ = audio_run
    folder = out / "targets" / "cortex-m4"
    (tmp_path / "both.cc").write_text(
        '#include "model_data.h"\n#include "frontend_data.h"\n#include <cstdio>\n'
        "int main() { std::printf(\"%u %u %u %u\\n\", g_model_len, g_frontend_len, kTensorArenaSize, "
        "kFrontendArenaSize); return 0; }\n")
    subprocess.run(["g++", "-std=c++17", "-Wall", "-Werror", "-I", str(folder), str(tmp_path / "both.cc"),
                    str(folder / "model_data.cc"), str(folder / "frontend_data.cc"), "-o", str(tmp_path / "both")],
                   check=True)
    got = subprocess.run([str(tmp_path / "both")], capture_output=True, text=True, check=True).stdout.split()
    assert int(got[1]) == len(audio.frontend_tflite("mfcc"))


def test_front_end_flash_on_cortex_m4(audio_run, tmp_path, capsys):
    """frontend_data.cc as an MCU build sees it: what it adds to flash (text + data)."""
    from conftest import require_tool

    require_tool("arm-none-eabi-g++", hint="Debian: gcc-arm-none-eabi libnewlib-arm-none-eabi; CI installs it")
    _, out, _ = audio_run
    folder = out / "targets" / "cortex-m4"
    obj = tmp_path / "frontend_data.o"
    subprocess.run(["arm-none-eabi-g++", "-mcpu=cortex-m4", "-mthumb", "-std=c++17", "-c", "-Os", "-Wall", "-Werror",
                    "-I", str(folder), str(folder / "frontend_data.cc"), "-o", str(obj)], check=True)
    size = subprocess.run(["arm-none-eabi-size", str(obj)], capture_output=True, text=True,
                          check=True).stdout.splitlines()
    text, data, bss = (int(v) for v in size[1].split()[:3])
    blob = len(audio.frontend_tflite("mfcc"))
    assert blob <= text + data < blob + 1024 and bss == 0
    with capsys.disabled():
        print(f"\n[cortex-m4] frontend_data.o: flash {text + data} bytes for a {blob}-byte front end")


def _load_evaluator(bundle: Path):
    """The bundle's evaluate.py (a byte copy of edgekit/ondevice/evaluate.py), imported."""
    from edgekit.ondevice import evaluate

    assert (bundle / "evaluate.py").read_bytes() == EVALUATOR.read_bytes()
    return evaluate


def test_the_bundle_classifies_wav_files_like_the_run_does(audio_run, tmp_path):
    """The one-file evaluator, on .wav files written here: front end then model, as the run's own
    features and model would classify the same clips (in-process; the CLI is the slow test)."""
    root, out, _ = audio_run
    bundle = out / "targets" / "rpi4" / "bundle"
    for name in ("frontend.tflite", "frontend.json", "labels.txt", "classify.sh", "model.tflite", "evaluate.py"):
        assert (bundle / name).is_file(), name
    ev = _load_evaluator(bundle)
    clips = [tone(100), noise(101), tone(102)[:12000]]  # the last one short: padded like training
    for i, c in enumerate(clips):
        write_wav(tmp_path / "w" / f"{i}.wav", c)
    found = ev.classify_wavs(str(bundle / "model.tflite"), str(tmp_path / "w"), runtime="ai_edge_litert")
    assert [r["file"] for r in found] == [str(tmp_path / "w" / f"{i}.wav") for i in range(3)]
    # the same clips, as the run's data path makes them: 16-bit rounding, padding, reference features
    ref_clips = np.zeros((3, 16000), "float32")
    for i, c in enumerate(clips):
        ref_clips[i, :len(c)] = np.round(np.clip(c, -1, 1 - 2 ** -15) * 32768) / 32768
    feats = ev.audio_features(str(bundle / "frontend.tflite"), ref_clips,
                              json.loads((bundle / "frontend.json").read_text()), runtime="ai_edge_litert")
    np.testing.assert_allclose(feats, audio.features(ref_clips), atol=audio.TOLERANCE["mfcc"])
    ref = ev.predict_outputs(str(bundle / "model.tflite"), audio.features(ref_clips), runtime="ai_edge_litert")
    assert [r["class"] for r in found] == list(ref.argmax(1))
    assert [r["label"] for r in found] == [["noise", "tone"][int(c)] for c in ref.argmax(1)]
    # the MCU's files: the int8 model and the front end, both in TFLite Micro, each with its own arena
    mcu = out / "targets" / "cortex-m4"
    arena = json.loads((mcu / "arena.json").read_text())["recommended_bytes"]
    on_mcu = ev.classify_wavs(str(mcu / "model_int8.tflite"), str(tmp_path / "w"), runtime="tflite_micro",
                              arena_bytes=arena)
    ref_mcu = ev.predict_outputs(str(mcu / "model_int8.tflite"), audio.features(ref_clips), runtime="tflite_micro",
                                 arena_bytes=arena)
    assert [r["class"] for r in on_mcu] == list(ref_mcu.argmax(1))


@pytest.mark.parametrize("kw, match", [
    ({"rate": 8000}, "8000 Hz; the front end takes 16000 Hz"),
    ({"channels": 2}, "2 channels; the front end takes mono"),
    ({"n": 20000}, "20000 samples is longer than the 16000"),
])
def test_the_bundle_refuses_wav_files_it_cannot_take(audio_run, tmp_path, kw, match):
    _, out, _ = audio_run
    bundle = out / "targets" / "rpi4" / "bundle"
    ev = _load_evaluator(bundle)
    n = kw.pop("n", 16000)
    write_wav(tmp_path / "bad.wav", np.resize(noise(5), n), **kw)
    with pytest.raises(ev.DataError, match=match):
        ev.classify_wavs(str(bundle / "model.tflite"), str(tmp_path / "bad.wav"), runtime="ai_edge_litert")


@pytest.mark.slow
def test_classify_sh_prints_the_class_of_each_wav(audio_run, tmp_path):
    """The bundle as a user runs it: `sh classify.sh FOLDER` in a child process."""
    _, out, _ = audio_run
    bundle = out / "targets" / "rpi4" / "bundle"
    write_wav(tmp_path / "w" / "a.wav", tone(200))
    write_wav(tmp_path / "w" / "b.wav", noise(201))
    proc = subprocess.run(["sh", str(bundle / "classify.sh"), str(tmp_path / "w"), "--out", str(tmp_path / "p.json")],
                          capture_output=True, text=True, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{tmp_path / 'w' / 'a.wav'}: ")
    preds = json.loads((tmp_path / "p.json").read_text())["predictions"]
    assert [f"{p['file']}: {p['label']} (class {p['class']})" for p in preds] == lines
    bad = subprocess.run([sys.executable, str(bundle / "evaluate.py"), "--model", str(bundle / "model.tflite"),
                          "--wav", str(tmp_path / "w"), "--data", str(bundle / "eval.npz")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "give one of them" in bad.stderr


@pytest.mark.slow
def test_the_bundle_classifies_a_wav_over_ssh_after_deploy(audio_run, tmp_path, monkeypatch):
    """`edgekit deploy --keep` to a real sshd on 127.0.0.1, then `sh classify.sh clip.wav` over SSH."""
    import shutil

    import paramiko
    from conftest import require_tool
    from sshd import SshServer, skip_reason

    require_tool("sshd", missing=skip_reason())
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    _, out, _ = audio_run
    run = Path(shutil.copytree(out, tmp_path / "run"))
    server = SshServer.start(tmp_path / "sshd")
    try:
        known = server.known_hosts(tmp_path / "known_hosts")
        where = tmp_path / "remote" / "bundle"
        res = CliRunner().invoke(main, ["-q", "deploy", str(run), "--target", "rpi4", "--host", server.destination,
                                        "--port", str(server.port), "--key", str(server.user_key), "--known-hosts",
                                        str(known), "--python", sys.executable, "--remote-dir", str(where), "--keep"])
        assert res.exit_code == 0, res.output
        for name in ("frontend.tflite", "frontend.json", "labels.txt", "classify.sh"):
            assert (where / name).read_bytes() == (run / "targets" / "rpi4" / "bundle" / name).read_bytes()
        clip = write_wav(tmp_path / "device" / "clip.wav", tone(300))
        client = paramiko.SSHClient()
        client.load_host_keys(str(known))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect("127.0.0.1", port=server.port, username=server.user, key_filename=str(server.user_key),
                       allow_agent=False, look_for_keys=False)
        try:
            _, stdout, stderr = client.exec_command(f"PYTHON={sys.executable} sh {where}/classify.sh {clip}")
            status = stdout.channel.recv_exit_status()
            text, err = stdout.read().decode(), stderr.read().decode()
        finally:
            client.close()
        assert status == 0, err
        local = subprocess.run(["sh", str(run / "targets" / "rpi4" / "bundle" / "classify.sh"), str(clip)],
                               capture_output=True, text=True, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
        assert text == local.stdout and text.startswith(f"{clip}: ") and text.split(": ")[1].split()[0] in ("noise", "tone")
    finally:
        server.stop()
