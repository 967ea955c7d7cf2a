"""Calibration/evaluation data sources: demo, tensor files, image folders, random."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from qtapp.core.base.errors import QtappError, UsageError
from qtapp.core.base.inputs import InputSpec
from qtapp.core.data.open import open_source

DIGITS = InputSpec(((1, 1, 8, 8),))
RGB16 = InputSpec.parse("1,3,16,16")


def batches(source):
    """The batches of a one-input source, as (x, y): every batch carries a tuple of inputs."""
    out = []
    for inputs, y in source:
        assert isinstance(inputs, tuple) and len(inputs) == 1
        out.append((inputs[0], y))
    return out


def test_demo_split():
    calib = open_source("demo", DIGITS, batch_size=16, max_batches=2)
    assert (calib.kind, calib.representative, calib.has_labels) == ("demo", True, True)
    assert (len(calib), calib.samples) == (2, 32)
    got = batches(calib)
    assert [tuple(x.shape) for x, _ in got] == [(16, 1, 8, 8)] * 2
    assert got[0][1].dtype == torch.int64 and set(got[0][1].tolist()) <= set(range(10))
    evaluation = open_source("demo", DIGITS, batch_size=16, max_batches=1, split="eval")
    assert evaluation.description == "demo eval split"
    assert not torch.equal(batches(evaluation)[0][0], got[0][0])  # a different split
    # re-iterable: a second pass yields the same batches
    assert torch.equal(batches(calib)[1][0], got[1][0])


def test_demo_data_does_not_fit_another_input():
    with pytest.raises(QtappError, match="Nx1x8x8.*Nx3x16x16"):
        open_source("demo", RGB16, batch_size=4, max_batches=1)


def test_npy_file(tmp_path):
    x = np.arange(10 * 64, dtype=np.float32).reshape(10, 1, 8, 8)
    np.save(tmp_path / "x.npy", x)
    source = open_source(str(tmp_path / "x.npy"), DIGITS, batch_size=4, max_batches=5)
    assert (source.kind, source.has_labels, source.representative) == ("tensor", False, True)
    got = batches(source)
    assert [len(b) for b, _ in got] == [4, 4, 2] and got[0][1] is None
    assert torch.equal(torch.cat([b for b, _ in got]), torch.from_numpy(x))
    # max_batches caps what is read
    assert open_source(str(tmp_path / "x.npy"), DIGITS, batch_size=4, max_batches=1).samples == 4


def test_npz_file_with_labels(tmp_path):
    x = np.random.default_rng(0).standard_normal((6, 1, 8, 8)).astype(np.float32)
    y = np.array([3, 1, 4, 1, 5, 9])
    np.savez(tmp_path / "d.npz", x=x, y=y)
    source = open_source(str(tmp_path / "d.npz"), DIGITS, batch_size=4, max_batches=4)
    assert source.has_labels
    assert torch.equal(torch.cat([lab for _, lab in source]), torch.from_numpy(y))


def test_npz_without_x_names_what_it_found(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((2, 1, 8, 8)))
    with pytest.raises(QtappError, match="no array named 'x' \\(found: images\\)"):
        open_source(str(tmp_path / "d.npz"), DIGITS, batch_size=4, max_batches=4)


def test_pt_dict_file(tmp_path):
    x, y = torch.randn(5, 1, 8, 8), torch.tensor([0, 1, 2, 3, 4])
    torch.save({"x": x, "y": y}, tmp_path / "d.pt")
    source = open_source(str(tmp_path / "d.pt"), DIGITS, batch_size=8, max_batches=1)
    (bx, by), = batches(source)
    assert torch.equal(bx, x) and torch.equal(by, y)
    torch.save({"inputs": x}, tmp_path / "bad.pt")
    with pytest.raises(QtappError, match="must hold a tensor or a dict with tensor 'x'"):
        open_source(str(tmp_path / "bad.pt"), DIGITS, batch_size=8, max_batches=1)


def test_unreadable_tensor_file_is_named(tmp_path):
    path = tmp_path / "broken.npy"
    path.write_bytes(b"garbage")
    with pytest.raises(QtappError) as exc:
        open_source(str(path), DIGITS, batch_size=4, max_batches=1)
    assert str(path) in str(exc.value)


def _png(path, color, size=(16, 16)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_image_folder_gives_labels(tmp_path):
    root = tmp_path / "images"
    _png(root / "cat" / "a.png", (255, 0, 0))
    _png(root / "cat" / "b.png", (255, 0, 0), size=(32, 24))  # resized to the input
    _png(root / "dog" / "c.png", (0, 0, 255))
    source = open_source(str(root), RGB16, batch_size=2, max_batches=4)
    assert (source.kind, source.has_labels, source.samples, len(source)) == ("folder", True, 3, 2)
    assert "2 classes" in source.description
    got = batches(source)
    x = torch.cat([b for b, _ in got])
    y = torch.cat([lab for _, lab in got])
    assert x.shape == (3, 3, 16, 16)
    assert y.tolist() == [0, 1, 0]  # class indices in sorted folder order, classes taken in turn
    # preprocess auto for a non-ImageNet input: resize only, pixels scaled to [0, 1]
    for i, (red, blue) in enumerate([(1, 0), (0, 1), (1, 0)]):
        assert torch.allclose(x[i, 0], torch.full((16, 16), float(red)))
        assert torch.allclose(x[i, 2], torch.full((16, 16), float(blue)))


def test_image_folder_with_mean_std_and_grayscale(tmp_path):
    root = tmp_path / "images"
    _png(root / "x" / "a.png", (255, 255, 255))
    source = open_source(str(root), RGB16, batch_size=2, max_batches=1,
                         preprocess={"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]})
    (x, _), = batches(source)
    assert torch.allclose(x, torch.full((1, 3, 16, 16), 2.0))
    gray = open_source(str(root), InputSpec.parse("1,1,16,16"), batch_size=2, max_batches=1)
    (x, _), = batches(gray)
    assert x.shape == (1, 1, 16, 16)


def test_images_without_class_folders_have_no_labels(tmp_path):
    _png(tmp_path / "a.png", (10, 20, 30))
    _png(tmp_path / "b.png", (10, 20, 30))
    source = open_source(str(tmp_path), RGB16, batch_size=4, max_batches=1)
    assert not source.has_labels and batches(source)[0][1] is None


def test_unreadable_image_is_skipped_and_named(tmp_path):
    root = tmp_path / "images"
    _png(root / "ok" / "a.png", (1, 2, 3))
    bad = root / "ok" / "b.png"
    bad.write_bytes(b"\x00garbage, not a PNG\xff" * 4)
    source = open_source(str(root), RGB16, batch_size=4, max_batches=1)
    assert source.samples == 1 and len(batches(source)) == 1
    assert len(source.skipped) == 1 and "cannot be read" in source.skipped[0] and str(bad) in source.skipped[0]


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    (tmp_path / "empty" / "cls" / "notes.txt").write_text("no images here")
    with pytest.raises(QtappError, match="no images found under"):
        open_source(str(tmp_path / "empty"), RGB16, batch_size=4, max_batches=1)


def test_image_folder_needs_an_image_input(tmp_path):
    _png(tmp_path / "a" / "a.png", (1, 2, 3))
    with pytest.raises(UsageError, match="image folders need an image input"):
        open_source(str(tmp_path), InputSpec.parse("1,12,16"), batch_size=4, max_batches=1)


def test_random_source_is_flagged_not_representative():
    source = open_source("random", RGB16, batch_size=3, max_batches=2, seed=5)
    assert (source.kind, source.representative, source.has_labels) == ("random", False, False)
    got = batches(source)
    assert [tuple(x.shape) for x, _ in got] == [(3, 3, 16, 16)] * 2
    assert not torch.equal(got[0][0], got[1][0])
    assert torch.equal(batches(source)[0][0], got[0][0])  # deterministic
    other_seed = batches(open_source("random", RGB16, batch_size=3, max_batches=1, seed=6))
    assert not torch.equal(other_seed[0][0], got[0][0])


def test_missing_sources_and_unknown_shapes(tmp_path):
    with pytest.raises(QtappError, match="data source not found"):
        open_source(str(tmp_path / "nope"), DIGITS, batch_size=4, max_batches=1)
    (tmp_path / "data.csv").write_text("1,2,3\n")
    with pytest.raises(QtappError, match="cannot use .*data.csv as data"):
        open_source(str(tmp_path / "data.csv"), DIGITS, batch_size=4, max_batches=1)
    with pytest.raises(UsageError, match="input shape is unknown"):
        open_source("random", None, batch_size=4, max_batches=1)


def test_empty_tensor_file_is_an_error(tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((0, 1, 8, 8), dtype=np.float32))
    with pytest.raises(QtappError, match="empty.npy is empty"):
        open_source(str(tmp_path / "empty.npy"), DIGITS, batch_size=4, max_batches=1)


def test_upper_case_tensor_suffixes(tmp_path):
    x = np.ones((3, 1, 8, 8), dtype=np.float32)
    with open(tmp_path / "CALIB.NPY", "wb") as f:  # np.save would append .npy to the name
        np.save(f, x)
    np.savez(tmp_path / "tmp.npz", x=x, y=np.array([1, 2, 3]))
    (tmp_path / "tmp.npz").rename(tmp_path / "DATA.NPZ")
    (x1, _), = batches(open_source(str(tmp_path / "CALIB.NPY"), DIGITS, batch_size=4, max_batches=1))
    (x2, y2), = batches(open_source(str(tmp_path / "DATA.NPZ"), DIGITS, batch_size=4, max_batches=1))
    assert torch.equal(x1, torch.from_numpy(x)) and torch.equal(x2, x1) and y2.tolist() == [1, 2, 3]


def test_a_capped_image_folder_still_samples_every_class(tmp_path):
    root = tmp_path / "images"
    for cls, color in (("a_first", (255, 0, 0)), ("b_second", (0, 255, 0)), ("c_third", (0, 0, 255))):
        for i in range(4):
            _png(root / cls / f"{i}.png", color)
    source = open_source(str(root), RGB16, batch_size=3, max_batches=1)  # 3 of the 12 images
    (x, y), = batches(source)
    assert sorted(y.tolist()) == [0, 1, 2]
    # each label goes with its own class's pixels
    for xi, yi in zip(x, y):
        assert float(xi[int(yi)].mean()) == 1.0
