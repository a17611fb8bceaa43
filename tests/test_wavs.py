"""The ``wav:DIR`` source: folders of .wav clips per class, read with the stdlib wave module;
tiny files written here (8/16/24-bit, mono and stereo), padding, and the bad cases refused."""

from __future__ import annotations

import wave

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli import main
from edgekit.data import load_dataset
from edgekit.errors import DataError
from edgekit.recipe import DataConfig
from edgekit.wavs import read_wav


def _write(path, samples: np.ndarray, rate=8000, width=2):
    """samples: int array (frames, channels) in the width's range (8-bit: unsigned)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.asarray(samples)
    if width == 1:
        raw = a.astype(np.uint8).tobytes()
    elif width == 2:
        raw = a.astype("<i2").tobytes()
    elif width == 3:
        v = a.astype(np.int64).reshape(-1) & 0xFFFFFF
        raw = np.stack([v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF], 1).astype(np.uint8).tobytes()
    else:
        raw = a.astype("<i4").tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(a.shape[1])
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)


@pytest.mark.parametrize("width, values, expected", [
    (1, [0, 128, 255], [-1.0, 0.0, 127 / 128]),
    (2, [-32768, 0, 16384], [-1.0, 0.0, 0.5]),
    (3, [-(1 << 23), -1, 1 << 22], [-1.0, -1 / (1 << 23), 0.5]),
    (4, [-(1 << 31), 0, 1 << 30], [-1.0, 0.0, 0.5]),
])
def test_pcm_widths_scale_to_unit_range(tmp_path, width, values, expected):
    _write(tmp_path / "a.wav", np.array(values)[:, None], width=width)
    x, rate = read_wav(tmp_path / "a.wav")
    assert rate == 8000 and x.shape == (3, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0], expected, atol=1e-7)


def _folder(tmp_path, per_class=6, frames=40, channels=1, short=0):
    rng = np.random.default_rng(0)
    for c, amp in (("no", 1000), ("yes", 20000)):
        for i in range(per_class):
            n = frames - (5 if i < short else 0)
            _write(tmp_path / "clips" / c / f"{i}.wav", (rng.normal(size=(n, channels)) * amp).clip(-32768, 32767))
    (tmp_path / "clips" / "no" / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "clips" / "yes" / "notes.txt").write_text("not audio")
    return tmp_path / "clips"


def test_wav_folder_loads_padded_and_named(tmp_path, caplog):
    folder = _folder(tmp_path, channels=2, short=2)
    d = load_dataset(DataConfig(source=f"wav:{folder}", test_split=0.25, val_split=0.0), seed=0)
    assert d.input_shape == (40, 2) and d.num_classes == 2 and d.class_names == ("no", "yes")
    assert len(d.x_train) + len(d.x_test) == 12
    assert "padded 4 of 12 clips" in caplog.text and "skipped 2 hidden or non-.wav" in caplog.text
    x = np.concatenate([d.x_train, d.x_test])
    assert (np.abs(x[..., 0]).max(axis=1) > 0).all() and np.abs(x).max() <= 1.0


@pytest.mark.parametrize("mutate, match", [
    (lambda f: _write(f / "yes" / "0.wav", np.zeros((40, 1)), rate=16000), "sample rate 16000 Hz, the others are 8000"),
    (lambda f: _write(f / "yes" / "0.wav", np.zeros((40, 2))), "2 channel.s., the others have 1"),
    (lambda f: (f / "yes" / "0.wav").write_bytes(b"RIFF0000WAVEjunk"), "not a readable PCM .wav file"),
    (lambda f: [p.unlink() for p in (f / "yes").glob("*.wav")], "class 'yes' has no .wav files"),
])
def test_wav_folder_refuses(tmp_path, mutate, match):
    folder = _folder(tmp_path)
    mutate(folder)
    with pytest.raises(DataError, match=match):
        load_dataset(DataConfig(source=f"wav:{folder}"), seed=0)


def test_wav_truncated_file_is_refused(tmp_path):
    _write(tmp_path / "a.wav", np.zeros((100, 1)))
    data = (tmp_path / "a.wav").read_bytes()
    (tmp_path / "a.wav").write_bytes(data[:-50])
    with pytest.raises(DataError, match="truncated"):
        read_wav(tmp_path / "a.wav")


def test_wav_recipe_validates_rank_and_missing_folder(tmp_path):
    _folder(tmp_path)
    (tmp_path / "r.yaml").write_text("name: x\ndata: {source: 'wav:clips'}\nteacher: {model: cnn_small}\n"
                                     "student: {model: conv1d_tiny}\n")
    res = CliRunner().invoke(main, ["recipes", "validate", str(tmp_path / "r.yaml")])
    assert res.exit_code == 2 and "'cnn_small' takes inputs of rank 3" in res.output
    assert "conv1d_tiny" not in res.output.split("models that fit")[0]
    (tmp_path / "m.yaml").write_text("name: x\ndata: {source: 'wav:nothere'}\n")
    res = CliRunner().invoke(main, ["recipes", "validate", str(tmp_path / "m.yaml")])
    assert res.exit_code == 2 and "folder 'nothere' not found" in res.output
