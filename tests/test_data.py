"""Dataset sources on generated files, and the bad cases each must refuse with one clear line."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.data import load_dataset
from edgekit.errors import DataError
from edgekit.recipe import DataConfig


def _xy(n=60, classes=3, shape=(6,), seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, *shape)).astype("float32") + y.reshape(-1, *([1] * len(shape)))
    return x, y


def test_npz_xy(tmp_path):
    x, y = _xy()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    d = load_dataset(DataConfig(source=f"npz:{tmp_path / 'd.npz'}"), seed=0)
    assert d.num_classes == 3 and d.input_shape == (6, 1)
    assert len(d.x_train) + len(d.x_val) + len(d.x_test) == 60


def test_npz_given_split_is_kept(tmp_path):
    x, y = _xy(80)
    np.savez(tmp_path / "d.npz", x_train=x[:60], y_train=y[:60], x_test=x[60:], y_test=y[60:])
    d = load_dataset(DataConfig(source="npz:d.npz", val_split=0.0, normalize="none"), seed=0, base=tmp_path)  # recipe-relative
    np.testing.assert_array_equal(d.x_test[..., 0], x[60:].astype("float32"))
    assert len(d.x_train) == 60


def test_csv_with_label_column(tmp_path):
    x, y = _xy(40, shape=(3,))
    lines = ["a,b,target,c"] + [f"{r[0]},{r[1]},{lab},{r[2]}" for r, lab in zip(x, y)]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    d = load_dataset(DataConfig(source=f"csv:{tmp_path / 'd.csv'}", label="target"), seed=0)
    assert d.input_shape == (3, 1) and d.num_classes == 3


def test_images_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "img" / cls).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (5, 7, 3), dtype=np.uint8)).save(tmp_path / "img" / cls / f"{i}.png")
    d = load_dataset(DataConfig(source=f"images:{tmp_path / 'img'}"), seed=0)
    assert d.input_shape == (5, 7, 3) and d.num_classes == 2
    assert 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0


@pytest.mark.parametrize("kind", ["minmax", "zscore"])
def test_normalization_is_fitted_on_train_only(tmp_path, kind):
    x, y = _xy(100)
    x[:, 0] *= 50
    np.savez(tmp_path / "d.npz", x=x, y=y)
    d = load_dataset(DataConfig(source=f"npz:{tmp_path / 'd.npz'}", normalize=kind), seed=0)
    if kind == "minmax":
        assert d.x_train.min() == pytest.approx(0.0, abs=1e-6) and d.x_train.max() == pytest.approx(1.0, abs=1e-6)
    else:
        np.testing.assert_allclose(d.x_train.mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(d.x_train.std(0), 1, atol=1e-4)
    # the test split uses the training statistics: it is not exactly normalized itself
    raw = (d.x_test * d.normalization["scale"]) + d.normalization["offset"]
    assert np.abs(raw).max() > 1.5


def _bad(tmp_path, name, **arrays):
    np.savez(tmp_path / name, **arrays)
    return DataConfig(source=f"npz:{tmp_path / name}")


BAD = [
    ("missing file", lambda p: DataConfig(source=f"npz:{p / 'nope.npz'}"), "dataset file not found"),
    ("not an npz", lambda p: (p.joinpath("x.npz").write_text("hello"), DataConfig(source=f"npz:{p / 'x.npz'}"))[1],
     "not a readable .npz file"),
    ("wrong keys", lambda p: _bad(p, "k.npz", a=np.zeros(3)), "expected arrays x, y"),
    ("length mismatch", lambda p: _bad(p, "l.npz", x=np.zeros((10, 2)), y=np.zeros(9, int)), "x has 10 samples but y has 9"),
    ("float labels", lambda p: _bad(p, "f.npz", x=np.zeros((10, 2)), y=np.zeros(10)), "integer class labels"),
    ("NaN", lambda p: _bad(p, "n.npz", x=np.where(np.eye(20, 2) > 0, np.nan, 0.0), y=np.arange(20) % 2),
     "2 samples hold NaN or inf values"),
    ("negative label", lambda p: _bad(p, "neg.npz", x=np.zeros((20, 2)), y=np.arange(20) % 2 - 1),
     "labels out of range: -1"),
    ("empty class", lambda p: _bad(p, "e.npz", x=np.zeros((20, 2)), y=(np.arange(20) % 2) * 2), "class(es) [1] have no samples"),
    ("one class", lambda p: _bad(p, "o.npz", x=np.zeros((20, 2)), y=np.zeros(20, int)), "needs at least 2 classes"),
    ("split shapes", lambda p: _bad(p, "s.npz", x_train=np.zeros((20, 3)), y_train=np.arange(20) % 2,
                                    x_test=np.zeros((5, 4)), y_test=np.arange(5) % 2), "x_train samples have shape"),
    ("pickled object", lambda p: _bad(p, "obj.npz", x=np.array([{"a": 1}] * 10, dtype=object), y=np.zeros(10, int)),
     "not a readable .npz file"),
    ("csv no label", lambda p: (p.joinpath("c.csv").write_text("a,b\n1,2\n"), DataConfig(source=f"csv:{p / 'c.csv'}"))[1],
     "no label column 'label'"),
    ("csv bad value", lambda p: (p.joinpath("c2.csv").write_text("a,label\nx,1\n"), DataConfig(source=f"csv:{p / 'c2.csv'}"))[1],
     "line 2: could not convert string to float"),
    ("images missing", lambda p: DataConfig(source=f"images:{p / 'none'}"), "image folder not found"),
]


@pytest.mark.parametrize("what,make,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_datasets_give_one_clear_line(tmp_path, what, make, expected):
    with pytest.raises(DataError) as info:
        load_dataset(make(tmp_path), seed=0)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)
