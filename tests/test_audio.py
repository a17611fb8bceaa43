"""The audio front end (edgekit.audio): the numpy reference against an independent computation,
the ``data.frontend`` recipe key and its refusals, and the same features from the TFLite front end
in LiteRT and in TensorFlow Lite Micro on the same clips (tolerance: ``audio.TOLERANCE``, max abs)."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit import audio
from edgekit.data import load_dataset
from edgekit.errors import DataError, RecipeError
from edgekit.recipe import DataConfig, check_inputs, load_recipe
from test_audio_ship import write_wav


def clips(n: int = 6, seed: int = 0) -> np.ndarray:
    return audio.synthetic_clips(n, seed=seed)


# --------------------------------------------------------------------------- numpy reference


def test_constants_give_the_mlperf_tiny_kws_shape():
    assert audio.FRAMES == 49
    assert audio.output_shape("mfcc") == (49, 10, 1)
    assert audio.output_shape("logmel") == (49, 40, 1)
    mel = audio.mel_matrix()
    assert mel.shape == (257, 40)
    assert (mel.sum(axis=0) > 0).all(), "every mel band takes at least one FFT bin"
    f = np.arange(257) * 16000 / 512
    assert not mel[(f <= audio.LOWER_HZ) | (f >= audio.UPPER_HZ)].any()
    dct = audio.dct_matrix()
    np.testing.assert_allclose(dct.T @ dct, np.eye(10), atol=1e-12)  # orthonormal basis vectors


def test_reference_matches_a_direct_computation():
    """Frame by frame with explicit loops and a dense DFT, against the vectorized reference."""
    x = clips(3)
    got = audio.features(x, "mfcc")
    assert got.shape == (3, 49, 10, 1) and got.dtype == np.float32
    n = np.arange(480)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / 480)
    k = np.arange(257)
    dft = np.exp(-2j * np.pi * np.outer(n, k) / 512)  # 480 samples, zero-padded to 512
    mel, dct = audio.mel_matrix(), audio.dct_matrix()
    for c in range(3):
        for f in (0, 17, 48):
            frame = x[c, 320 * f: 320 * f + 480].astype("float64") * hann
            logmel = np.log(np.abs(frame @ dft) ** 2 @ mel + 1e-6)
            np.testing.assert_allclose(got[c, f, :, 0], logmel @ dct, rtol=1e-5, atol=1e-4)
            np.testing.assert_allclose(audio.features(x[c:c + 1, :, None], "logmel")[0, f, :, 0], logmel,
                                       rtol=1e-5, atol=1e-4)


def test_silence_is_the_log_floor_and_loudness_moves_only_c0():
    x = clips(2)
    lm = audio.features(np.zeros((1, 16000), "float32"), "logmel")
    np.testing.assert_allclose(lm, np.log(1e-6), rtol=1e-6)
    loud = audio.features(x[:1] * 2, "mfcc") - audio.features(x[:1], "mfcc")
    # doubling the amplitude adds ln 4 to every log-mel energy: only the 0th DCT coefficient moves
    np.testing.assert_allclose(loud[..., 0, 0], np.log(4) * np.sqrt(40), rtol=1e-3)
    assert np.abs(loud[..., 1:, 0]).max() < 1e-3


def test_features_refuse_other_shapes():
    with pytest.raises(ValueError, match="16000"):
        audio.features(np.zeros((2, 8000), "float32"))
    with pytest.raises(ValueError, match="unknown front end"):
        audio.features(np.zeros((2, 16000), "float32"), "mfccs")


# --------------------------------------------------------------------------- recipe and data


def _recipe(tmp_path, data: str, **extra) -> str:
    text = f"name: fe\ndata: {data}\nteacher: {{model: cnn_tiny, epochs: 1}}\nstudent: null\nprune: null\nqat: null\n"
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("source", ["digits", "mnist1d", "csv:x.csv", "images:imgs", "ucr:GunPoint"])
def test_frontend_on_non_waveform_data_names_the_key(tmp_path, source):
    with pytest.raises(RecipeError, match=r"data\.frontend: mfcc turns 1 s waveforms .* holds no waveforms"):
        load_recipe(_recipe(tmp_path, f"{{source: '{source}', frontend: mfcc}}"))


def test_frontend_value_is_checked(tmp_path):
    with pytest.raises(RecipeError, match=r"data\.frontend: 'mfc' is not allowed"):
        load_recipe(_recipe(tmp_path, "{source: 'wav:clips', frontend: mfc}"))


def _wav_folder(tmp_path, per_class=6, rate=16000, frames=16000, channels=1):
    x = clips(2 * per_class, seed=1)
    for i in range(2 * per_class):
        cls = ("no", "yes")[i % 2]
        sig = x[i] if frames == 16000 else np.resize(x[i], frames)
        write_wav(tmp_path / "clips" / cls / f"{i}.wav", sig, rate=rate, channels=channels)
    return tmp_path / "clips"


def test_wav_source_with_frontend_gives_mfcc_features(tmp_path):
    folder = _wav_folder(tmp_path)
    ds = load_dataset(DataConfig(source=f"wav:{folder}", frontend="mfcc", test_split=0.3, val_split=0.0))
    assert ds.input_shape == (49, 10, 1) and ds.frontend == "mfcc" and ds.normalization is None
    assert ds.summary()["frontend"] == "mfcc" and ds.class_names == ("no", "yes")
    raw = load_dataset(DataConfig(source=f"wav:{folder}", test_split=0.3, val_split=0.0))
    np.testing.assert_array_equal(ds.x_test, audio.features(raw.x_test))  # same split, same features
    lm = load_dataset(DataConfig(source=f"wav:{folder}", frontend="logmel", test_split=0.3, val_split=0.0))
    assert lm.input_shape == (49, 40, 1)


@pytest.mark.parametrize("kw, match", [
    ({"rate": 8000}, r"needs 16000 Hz audio, the clips are 8000 Hz; resample them"),
    ({"frames": 8000}, r"1 s clips of 16000 samples, found 8000 samples \(0\.5 s"),
    ({"frames": 24000}, r"found 24000 samples .*data\.window: \{length: 16000"),
    ({"channels": 2}, r"takes mono clips, these have 2 channels"),
])
def test_wav_source_with_frontend_refuses_other_clips(tmp_path, kw, match):
    folder = _wav_folder(tmp_path, **kw)
    with pytest.raises(DataError, match=match):
        load_dataset(DataConfig(source=f"wav:{folder}", frontend="mfcc"))


def test_npz_waveforms_and_windows_of_long_recordings(tmp_path):
    """npz: (n, 16000) clips (taken as 16 kHz); and 2 s recordings cut by data.window into 1 s clips."""
    x = clips(12, seed=2)
    y = np.arange(12) % 2
    np.savez(tmp_path / "w.npz", x=x, y=y)
    ds = load_dataset(DataConfig(source=f"npz:{tmp_path / 'w.npz'}", frontend="mfcc", val_split=0.0))
    assert ds.input_shape == (49, 10, 1) and ds.normalization is None  # not a table: no auto zscore
    np.savez(tmp_path / "long.npz", x=np.concatenate([x, x[::-1]], axis=1), y=y)
    ds = load_dataset(DataConfig(source=f"npz:{tmp_path / 'long.npz'}", frontend="mfcc", val_split=0.0,
                                 window={"length": 16000, "stride": 16000}))
    assert ds.input_shape == (49, 10, 1) and len(ds.x_train) + len(ds.x_test) == 24


def test_check_inputs_sees_the_feature_shape(tmp_path):
    folder = _wav_folder(tmp_path)
    p = _recipe(tmp_path, f"{{source: 'wav:{folder.name}', frontend: mfcc}}")
    assert check_inputs(load_recipe(p), p) == []  # cnn_tiny takes (49, 10, 1)
    p.write_text(p.read_text().replace("cnn_tiny", "conv1d_small"))
    assert any("rank 3" in line for line in check_inputs(load_recipe(p), p))
    np.savez(tmp_path / "short.npz", x=np.zeros((12, 8000), "float32"), y=np.arange(12) % 2)
    p.write_text(p.read_text().replace(f"wav:{folder.name}", "npz:short.npz").replace("conv1d_small", "cnn_tiny"))
    assert any("data.frontend: takes mono 1 s clips" in line for line in check_inputs(load_recipe(p), p))


# --------------------------------------------------------------------------- host vs device


@pytest.fixture(scope="module")
def frontends() -> dict[str, bytes]:
    return {kind: audio.frontend_tflite(kind) for kind in audio.FRONTENDS}


@pytest.mark.parametrize("kind", sorted(audio.FRONTENDS))
def test_tflite_front_end_equals_the_reference_in_litert_and_tflite_micro(frontends, kind):
    """The same 7 clips (one of each kind: noise, tone, chirp, silence, bursts, clipped, quiet)
    through numpy, LiteRT and TFLite Micro: max abs difference within audio.TOLERANCE[kind]."""
    from edgekit.mcu import TFLM_OPS, model_ops

    blob = frontends[kind]
    assert set(model_ops(blob)) <= set(TFLM_OPS)
    assert len(blob) < 48_000  # the factorized DFT: a dense 480 x 257 cos/sin pair alone is ~1 MB
    x = clips(7, seed=3)
    ref = audio.features(x, kind)
    lite = audio.run_tflite(blob, x, runtime="ai_edge_litert")
    micro = audio.run_tflite(blob, x, runtime="tflite_micro")
    assert lite.shape == micro.shape == ref.shape == (7, *audio.output_shape(kind))
    tol = audio.TOLERANCE[kind]
    assert np.abs(lite - ref).max() <= tol
    assert np.abs(micro - ref).max() <= tol
    assert np.abs(micro - lite).max() <= tol
    noise = [0, 4, 5]  # broadband clips agree far closer than the tolerance
    assert np.abs(micro[noise] - ref[noise]).max() < 1e-4
    assert np.abs(ref[1] - ref[2]).max() > 100 * tol  # different clips differ far beyond the tolerance


def test_tflite_front_end_equals_the_reference_on_synthesized_speech(frontends, tmp_path):
    """Spoken words (espeak-ng, resampled to 16 kHz and padded to 1 s by sox) through numpy, LiteRT
    and TFLite Micro; read back through the wav: source's reader, as training data is."""
    import subprocess

    from conftest import require_tool

    from edgekit.wavs import read_wav

    require_tool("espeak-ng", hint="apt-get install espeak-ng; CI installs it")
    require_tool("sox", hint="apt-get install sox; CI installs it")
    waves = []
    for word, voice in (("yes", "en"), ("stop", "en+f3"), ("left", "en-us")):
        raw, out = tmp_path / f"{word}.raw.wav", tmp_path / f"{word}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), word], check=True, capture_output=True)
        subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out), "pad", "0.1", "1",
                        "trim", "0", "1"], check=True, capture_output=True)
        x, rate = read_wav(out)
        assert rate == 16000 and x.shape == (16000, 1)
        waves.append(x[:, 0])
    x = np.stack(waves)
    for kind, blob in frontends.items():
        ref = audio.features(x, kind)
        for runtime in ("ai_edge_litert", "tflite_micro"):
            assert np.abs(audio.run_tflite(blob, x, runtime=runtime) - ref).max() <= audio.TOLERANCE[kind] / 10


def test_tflite_front_end_arena_is_measured(frontends, tmp_path):
    from edgekit.mcu import measure_arena

    p = tmp_path / "frontend.tflite"
    p.write_bytes(frontends["mfcc"])
    arena = measure_arena(p, margin_fraction=0.0)
    assert 1_000 < arena.min_bytes < 64_000, arena  # one frame's tensors, not a clip's (508 KB)
    x = clips(1)
    np.testing.assert_allclose(audio.run_tflite(p, x, runtime="tflite_micro", arena_bytes=arena.min_bytes),
                               audio.features(x), atol=audio.TOLERANCE["mfcc"])


def test_run_tflite_refuses_another_runtime(frontends):
    with pytest.raises(ValueError, match="tflite_micro"):
        audio.run_tflite(frontends["mfcc"], clips(1), runtime="onnxruntime")


def test_the_run_fingerprint_holds_the_front_end_and_its_constants(tmp_path, monkeypatch):
    from edgekit.manifest import fingerprint
    from edgekit.pipeline import Run

    folder = _wav_folder(tmp_path)
    p = _recipe(tmp_path, f"{{source: 'wav:{folder.name}', frontend: mfcc}}")
    fp = Run(load_recipe(p), p, tmp_path / "run").data_fingerprint()
    p.write_text(p.read_text().replace("frontend: mfcc", "frontend: logmel"))
    assert Run(load_recipe(p), p, tmp_path / "run").data_fingerprint() != fp
    p.write_text(p.read_text().replace("frontend: logmel", "frontend: mfcc"))
    assert Run(load_recipe(p), p, tmp_path / "run").data_fingerprint() == fp
    monkeypatch.setattr(audio, "LOG_FLOOR", 1e-5)  # one constant changed: other features, other data
    assert Run(load_recipe(p), p, tmp_path / "run").data_fingerprint() != fp
    # without a front end, a run keeps the fingerprint it had before data.frontend existed
    p.write_text(p.read_text().replace(", frontend: mfcc", ""))
    run = Run(load_recipe(p), p, tmp_path / "run")
    old = fingerprint(fingerprint("run", 0, {k: v for k, v in run.recipe.data.model_dump(mode="json").items()
                                             if k != "frontend"}), {"data_sha256": run.data_digest()})
    assert run.data_fingerprint() == old
