"""Distributed teacher training: the tf.data input, mixed precision, backups, and clusters of
worker processes on 127.0.0.1 (multi-worker, a killed worker, parameter servers, a "real"
cluster file).

The cluster tests (slow: process-level; the cluster file, TF_CONFIG, usage errors, the input
pipeline, mixed precision and the backup logic run in process in the default suite) start
``edgekit`` in its own session and kill that whole process group in a
finalizer (the workers also die with their supervisor), and every wait has a timeout.
Mirrored training on two logical CPUs is tested in ``test_stages.py``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli import main
from edgekit.cluster import ClusterSpec, Task, free_ports, is_chief, load_cluster, parse_task, read_events
from edgekit.errors import RecipeError
from edgekit.recipe import Strategy, TeacherConfig

WAIT_S = 300  # upper bound for any wait; the tests themselves take well under a minute on 2 cores


def _recipe(tmp_path: Path, *, epochs: int, batch_size: int = 32, strategy: str = "auto") -> Path:
    path = tmp_path / "teacher.yaml"
    path.write_text(f"""
name: dist
seed: 0
data: {{source: digits}}
teacher: {{model: cnn_tiny, epochs: {epochs}, batch_size: {batch_size}, learning_rate: 0.01, strategy: {strategy}}}
student: null
prune: null
qat: null
targets: [mobile]
""")
    return path


@pytest.fixture
def spawn(tmp_path):
    """Start ``python -m edgekit.cli ARGS`` in a new session; kill its whole group afterwards."""
    procs: list[subprocess.Popen] = []

    def start(*args: str, name: str = "cli") -> subprocess.Popen:
        log = open(tmp_path / f"{name}.log", "wb")
        p = subprocess.Popen([sys.executable, "-m", "edgekit.cli", *args], stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        p.log_path = tmp_path / f"{name}.log"  # type: ignore[attr-defined]
        log.close()
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=30)


def _finish(p: subprocess.Popen, timeout_s: float = WAIT_S) -> str:
    try:
        p.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"edgekit did not finish in {timeout_s} s:\n{_tail(p)}")
    out = p.log_path.read_text(errors="replace")  # type: ignore[attr-defined]
    assert p.returncode == 0, out[-3000:]
    return out


def _tail(p: subprocess.Popen) -> str:
    return p.log_path.read_text(errors="replace")[-3000:]  # type: ignore[attr-defined]


def _wait_for(what: str, predicate, p: subprocess.Popen, timeout_s: float = WAIT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if p.poll() is not None:
            pytest.fail(f"edgekit exited ({p.returncode}) before {what}:\n{_tail(p)}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}:\n{_tail(p)}")


def _epochs(events: list[dict]) -> list[tuple[int, int]]:
    """(attempt, epoch) of every finished epoch, in order."""
    return [(e["attempt"], e["epoch"]) for e in events if e["event"] == "epoch"]


# ----------------------------------------------------------------------------- config, no TensorFlow


def test_cluster_file_task_and_tf_config(tmp_path):
    good = tmp_path / "cluster.yaml"
    good.write_text("worker: [10.0.0.1:2222, 10.0.0.2:2222]\nps: [10.0.0.3:2222]\nchief: [10.0.0.4:2222]\n")
    spec = load_cluster(good)
    assert spec.strategy == "parameter_server" and spec.chief_task() == Task("chief", 0)
    assert [str(t) for t in spec.tasks()] == ["chief:0", "worker:0", "worker:1", "ps:0"]
    assert spec.trains(Task("chief", 0)) and not spec.trains(Task("worker", 1))
    cfg = json.loads(spec.tf_config(Task("worker", 1)))
    assert cfg == {"cluster": {"chief": ["10.0.0.4:2222"], "worker": ["10.0.0.1:2222", "10.0.0.2:2222"],
                               "ps": ["10.0.0.3:2222"]}, "task": {"type": "worker", "index": 1}}
    assert not is_chief(cfg) and is_chief(json.loads(spec.tf_config(Task("chief", 0))))
    mw = ClusterSpec(("127.0.0.1:1", "127.0.0.1:2"))
    assert mw.strategy == "multi_worker" and mw.trains(Task("worker", 1))
    assert is_chief(json.loads(mw.tf_config(Task("worker", 0))))
    assert not is_chief(json.loads(mw.tf_config(Task("worker", 1))))
    assert is_chief(None)

    for text, message in [("ps: [a:1]\nworker: [b:2]\n", "chief: required with ps"),
                          ("worker: [nohost]\n", "worker.0: string should match pattern"),
                          ("workers: [a:1]\n", "unknown key; did you mean 'worker'?"),
                          ("worker: [a:1, a:1]\n", "an address appears twice")]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(RecipeError, match=message) as err:
            load_cluster(bad)
        assert str(bad) in str(err.value)
    assert parse_task("ps:3") == Task("ps", 3)
    with pytest.raises(ValueError, match="not a task"):
        parse_task("gpu:0")
    ports = free_ports(5)
    assert len(set(ports)) == 5 and all(p > 0 for p in ports)


def test_recipe_strategies_and_mixed_precision():
    cfg = TeacherConfig(strategy="parameter_server", mixed_precision=True)
    assert cfg.strategy is Strategy.parameter_server and cfg.mixed_precision is True
    assert TeacherConfig().mixed_precision is False
    assert {s.value for s in Strategy} == {"auto", "one_device", "mirrored", "multi_worker", "parameter_server"}


@pytest.mark.parametrize("args, message", [
    (["{recipe}"], "--out is required with a RECIPE"),
    (["{recipe}", "--out", "{out}", "--ps", "1"], "--ps needs --workers"),
    (["{recipe}", "--out", "{out}", "--cluster", "{cluster}"], "--cluster and --task go together"),
    (["{recipe}", "--out", "{out}", "--cluster", "{cluster}", "--task", "worker:0", "--workers", "2"],
     "--cluster and --workers exclude each other"),
    (["{recipe}", "--out", "{out}", "--cluster", "{cluster}", "--task", "worker:x"], "not a task"),
    (["{recipe}", "--out", "{out}", "--cluster", "{cluster}", "--task", "worker:2"],
     "task worker:2 is not in the cluster (tasks: worker:0, worker:1)"),
    (["{tmp}", "--out", "{out}"], "--out goes with a RECIPE"),
])
def test_train_usage_errors(tmp_path, args, message):
    recipe = _recipe(tmp_path, epochs=1)
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("worker: [127.0.0.1:1, 127.0.0.1:2]\n")
    fill = {"recipe": str(recipe), "out": str(tmp_path / "out"), "cluster": str(cluster), "tmp": str(tmp_path)}
    res = CliRunner().invoke(main, ["train", *[a.format(**fill) for a in args]])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- in process


def test_input_pipeline_batches_globally_and_shuffles_by_seed():
    from edgekit import train
    from edgekit._tf import tf

    x = np.arange(100, dtype="float32")[:, None]
    y = np.arange(100)
    def epochs(seed: int, n: int = 2) -> list[np.ndarray]:
        ds = train.make_dataset(x, y, batch_size=32, seed=seed, shuffle=True)
        return [np.concatenate([b[:, 0] for b, _ in ds]) for _ in range(n)]

    ds = train.make_dataset(x, y, batch_size=32, seed=7, shuffle=True)
    assert [len(b) for b, _ in ds] == [32, 32, 32, 4]  # the global batch; a strategy splits it over replicas
    first, second = epochs(7)
    assert sorted(first) == list(range(100)) and not np.array_equal(first, second)  # reshuffled every epoch
    assert all(np.array_equal(a, b) for a, b in zip(epochs(7), (first, second)))  # the same seed, the same order
    assert not np.array_equal(epochs(8)[0], first)
    policy = tf().data.experimental.AutoShardPolicy
    assert ds.options().experimental_distribute.auto_shard_policy == policy.DATA
    shard = train.make_dataset(x, y, batch_size=10, shard=(2, 1))
    assert shard.options().experimental_distribute.auto_shard_policy == policy.OFF
    assert np.concatenate([b[:, 0] for b, _ in shard]).tolist() == list(range(1, 100, 2))


def test_mixed_precision_keeps_float32_logits_and_saves_float32(caplog):
    from edgekit import train
    from edgekit._tf import keras
    from edgekit.data import Dataset

    cfg = TeacherConfig(model="cnn_tiny", mixed_precision=True, learning_rate=0.01)
    with caplog.at_level(logging.WARNING, logger="edgekit.train"):
        assert train.precision_policy(cfg, gpus=0) == "float32"
    assert "no GPU visible" in caplog.text
    assert train.precision_policy(cfg, gpus=1) == "mixed_float16"
    assert train.precision_policy(TeacherConfig(), gpus=4) == "float32"

    # mixed_float16 also runs on a CPU (slowly): check the model itself here
    model = train.build_teacher(cfg, input_shape=(8, 8, 1), num_classes=10, seed=0, policy="mixed_float16")
    assert keras().mixed_precision.global_policy().name == "float32"  # the policy was scoped
    assert model.layers[1].compute_dtype == "float16" and model.output.dtype.name == "float32"
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 8, 8, 1), dtype="float32"), rng.integers(0, 10, 64)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert type(model.optimizer).__name__.startswith("LossScaleOptimizer")
    data = Dataset("r", x, y, x[:0], y[:0], x, y, 10)
    plain = train._export(model, cfg, data, seed=0)
    assert all(w.dtype.name == "float32" for w in plain.weights) and plain.output.dtype.name == "float32"
    assert train.weights_sha256(plain) == train.weights_sha256(model)
    np.testing.assert_allclose(plain.predict(x, verbose=0), model.predict(x, verbose=0), atol=0.05)  # fp16 compute


def test_backup_is_kept_only_for_the_same_config_seed_and_data(tmp_path):
    from edgekit import train
    from edgekit.data import load_dataset
    from edgekit.recipe import DataConfig

    data = load_dataset(DataConfig(source="digits"), seed=0)
    cfg = TeacherConfig(model="cnn_tiny", epochs=3)
    fp = train.backup_fingerprint(cfg, 0, data)
    assert fp == train.backup_fingerprint(cfg.model_copy(update={"strategy": Strategy.multi_worker}), 0, data)
    assert fp != train.backup_fingerprint(cfg.model_copy(update={"learning_rate": 0.5}), 0, data)
    assert fp != train.backup_fingerprint(cfg, 1, data)
    backup = tmp_path / ".backup"
    assert train.prepare_backup(backup, fp) is False  # nothing to resume: stamped for this run
    (backup / "chief").mkdir()
    (backup / "chief" / "checkpoint").write_text('model_checkpoint_path: "ckpt-2"\n')
    assert train.prepare_backup(backup, fp) is True
    assert train.prepare_backup(backup, "another") is False
    assert not (backup / "chief").exists()


def test_interrupted_teacher_continues_from_its_backup_in_process(tmp_path):
    """The backup logic of a killed run, in process: training stops (KeyboardInterrupt from inside
    fit) after epoch 2 of 4; calling train.run again restores the backup and trains exactly the
    epochs that were not backed up. The process-level kill is the slow test below."""
    from edgekit import train
    from edgekit.data import load_dataset
    from edgekit.recipe import DataConfig

    data = load_dataset(DataConfig(source="digits"), seed=0)
    cfg = TeacherConfig(model="cnn_tiny", epochs=4, batch_size=64, learning_rate=0.01)
    out = tmp_path / "teacher"

    def stop_after_two(stage, epoch, epochs, logs):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train.run(data, cfg, seed=0, out_dir=out, progress=stop_after_two)
    index = out / train.BACKUP_DIR / "chief" / "checkpoint"
    assert index.is_file() and not (out / "model.keras").exists()
    assert int(index.read_text().split('"')[1].rsplit("-", 1)[1]) == 2  # ckpt-2: two epochs backed up
    seen = []
    res = train.run(data, cfg, seed=0, out_dir=out, progress=lambda s, e, n, logs: seen.append(e))
    assert res.metrics["resumed_from_epoch"] == 2 and res.metrics["epochs_run"] == 4 and seen == [3, 4]
    assert res.metrics["steps"] == 2 * int(np.ceil(len(data.x_train) / 64))
    assert res.metrics["accuracy"] > 0.5
    assert not (out / train.BACKUP_DIR).exists() and res.model_path.is_file()


@pytest.mark.slow
def test_run_resume_continues_teacher_from_backup(tmp_path, spawn):
    """``edgekit run`` killed (SIGKILL) during teacher training; ``run --resume`` continues from
    the last backup: exactly the epochs that were backed up are not trained again."""
    epochs = 8
    recipe = _recipe(tmp_path, epochs=epochs, batch_size=8)
    out = tmp_path / "run"
    p = spawn("run", str(recipe), "--out", str(out), "--until", "teacher", name="first")
    index = out / "stages" / "teacher" / ".backup" / "chief" / "checkpoint"
    _wait_for("the first backup", index.is_file, p)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    saved = int(index.read_text().split('"')[1].rsplit("-", 1)[1])  # ckpt-N: N epochs finished
    assert 1 <= saved < epochs
    again = spawn("run", str(recipe), "--out", str(out), "--resume", "--until", "teacher", name="resume")
    _finish(again)
    metrics = json.loads((out / "stages" / "teacher" / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == saved and metrics["epochs_run"] == epochs
    assert metrics["steps"] == (epochs - saved) * int(np.ceil(1293 / 8))
    assert metrics["accuracy"] > 0.8
    assert not (out / "stages" / "teacher" / ".backup").exists()
    assert json.loads((out / "manifest.json").read_text())["stages"]["teacher"]["status"] == "done"


# ----------------------------------------------------------------------------- clusters on 127.0.0.1


@pytest.mark.slow
def test_two_workers_from_a_cluster_file_stay_in_sync(tmp_path, spawn):
    """Two machines' commands (``--cluster cluster.yaml --task worker:I``), run here on loopback:
    the same losses every epoch and bit-identical final weights; only the chief writes."""
    recipe = _recipe(tmp_path, epochs=2)
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("worker: [{}]\n".format(", ".join(f"127.0.0.1:{p}" for p in free_ports(2))))
    out = tmp_path / "run"
    procs = [spawn("train", str(recipe), "--out", str(out), "--cluster", str(cluster), "--task", f"worker:{i}",
                   name=f"worker{i}") for i in (0, 1)]
    for p in procs:
        _finish(p)
    stage = out / "stages" / "teacher"
    done = {}
    for i in (0, 1):
        events = read_events(stage, f"worker:{i}")
        done[i] = [e for e in events if e["event"] == "done"][-1]
        assert _epochs(events) == [(1, 1), (1, 2)]
    assert done[0]["chief"] is True and done[1]["chief"] is False
    m0, m1 = done[0]["metrics"], done[1]["metrics"]
    assert m0["weights_sha256"] == m1["weights_sha256"]
    assert m0["loss"] == m1["loss"]
    losses = [[e["logs"]["loss"] for e in read_events(stage, f"worker:{i}") if e["event"] == "epoch"] for i in (0, 1)]
    assert losses[0] == losses[1]
    assert m0["strategy"] == "MultiWorkerMirroredStrategy" and m0["replicas"] == 2
    assert m0["per_replica_batch_size"] == 16
    saved = json.loads((stage / "metrics.json").read_text())
    assert saved["weights_sha256"] == m0["weights_sha256"]
    assert sorted(p.name for p in stage.iterdir()) == [".cluster", "metrics.json", "model.keras"]
    assert "the chief worker:0 writes the teacher" in _tail(procs[1])

    # the run goes on from here: the teacher trained on the cluster is current
    res = CliRunner().invoke(main, ["run", str(recipe), "--out", str(out), "--resume", "--until", "teacher"])
    assert res.exit_code == 0 and "1 stage up to date, reused (teacher)" in res.output, res.output
    # and `edgekit train RUN_DIR` still retrains the teacher of a run, here in this process
    res = CliRunner().invoke(main, ["train", str(out)])
    assert res.exit_code == 0, res.output
    again = json.loads((stage / "metrics.json").read_text())
    assert again["strategy"] in ("OneDeviceStrategy", "MirroredStrategy") and again["resumed_from_epoch"] == 0
    teacher = json.loads((out / "manifest.json").read_text())["stages"]["teacher"]
    assert teacher["status"] == "done" and "cluster" not in teacher["metrics"]


@pytest.mark.slow
def test_killed_worker_is_restarted_and_resumes_from_backup(tmp_path, spawn):
    """``--workers 2``: SIGKILL worker 1 after an epoch finished; the cluster restarts from the
    backup and no finished epoch is run again."""
    epochs = 3
    recipe = _recipe(tmp_path, epochs=epochs)
    out = tmp_path / "run"
    p = spawn("train", str(recipe), "--out", str(out), "--workers", "2")
    stage = out / "stages" / "teacher"

    def epoch_one_done():
        return all(any(e == (1, 1) for e in _epochs(read_events(stage, f"worker:{i}"))) for i in (0, 1))

    _wait_for("epoch 1 on both workers", epoch_one_done, p)
    victim = [e for e in read_events(stage, "worker:1") if e["event"] == "start"][0]["pid"]
    os.kill(victim, signal.SIGKILL)
    log = _finish(p)
    assert "worker:1 was killed by SIGKILL; restarting the cluster from the last backup" in log
    for i in (0, 1):
        runs = _epochs(read_events(stage, f"worker:{i}"))
        first = [epoch for attempt, epoch in runs if attempt == 1]
        second = [epoch for attempt, epoch in runs if attempt == 2]
        assert first and second and first[-1] < epochs, runs
        assert [epoch for _, epoch in runs] == list(range(1, epochs + 1)), f"an epoch ran twice: {runs}"
    chief = [e for e in read_events(stage, "worker:0") if e["event"] == "done"]
    assert len(chief) == 1 and chief[0]["attempt"] == 2
    assert chief[0]["metrics"]["resumed_from_epoch"] == first[-1]
    manifest = json.loads((out / "manifest.json").read_text())["stages"]["teacher"]
    assert manifest["status"] == "done" and manifest["metrics"]["cluster"]["restarts"] == 1
    assert not (stage / ".backup").exists()


@pytest.mark.slow
def test_parameter_server_cluster(tmp_path, spawn):
    """``--workers 1 --ps 1``: a coordinator runs model.fit with a DatasetCreator; a worker and a
    parameter server run tf.distribute.Server; the servers are stopped once it is done."""
    recipe = _recipe(tmp_path, epochs=2)
    out = tmp_path / "run"
    p = spawn("train", str(recipe), "--out", str(out), "--workers", "1", "--ps", "1")
    _finish(p)
    stage = out / "stages" / "teacher"
    metrics = json.loads((stage / "metrics.json").read_text())
    assert metrics["strategy"] == "ParameterServerStrategy" and metrics["epochs_run"] == 2
    assert metrics["steps"] == 2 * int(np.ceil(1293 / 32)) and metrics["accuracy"] > 0.5
    for task in ("worker:0", "ps:0"):
        assert [e["event"] for e in read_events(stage, task)] == ["start", "serving"]
    assert _epochs(read_events(stage, "chief:0")) == [(1, 1), (1, 2)]
    assert not (stage / ".backup").exists()


@pytest.mark.bench
def test_bench_train_prints_ratios(tmp_path):
    """``tools/bench_train.py`` on a small budget: it runs and its ratios are sane numbers."""
    out = tmp_path / "bench.json"
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, str(root / "tools" / "bench_train.py"), "--model", "cnn_tiny",
                           "--epochs", "2", "--rounds", "2", "--cluster-epochs", "2", "--json-out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(proc.stdout)
    res = json.loads(out.read_text())
    assert res["in_process"]["ratio"]["median"] > 0 and len(res["in_process"]["per_round"]) == 2
    assert res["cluster"]["ratio_fit"] > 0 and [r["workers"] for r in res["cluster"]["runs"]] == [1, 2]
    assert "edgekit / bare fit steps/s" in proc.stdout and "2 workers / 1 worker samples/s" in proc.stdout
