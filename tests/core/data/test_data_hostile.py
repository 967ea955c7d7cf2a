"""Hostile calibration/evaluation data: whatever a data file holds, opening it gives finite inputs of the
model's dtype and valid class ids, or one QtappError that names the file and the problem."""

from __future__ import annotations

import io
import os
import threading
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from qtapp.core.base.errors import QtappError, UsageError
from qtapp.core.base.inputs import InputSpec
from qtapp.core.data.open import open_source

VEC6 = InputSpec.parse("1,6")
TOKENS = InputSpec.parse("1,6", "int64")
RGB16 = InputSpec.parse("1,3,16,16")
FAST = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def save(path, x, y=None, fmt=None):
    """Write x (and y) as .npy, .npz or .pt, by the path's suffix."""
    fmt = fmt or path.suffix
    if fmt == ".npy":
        np.save(path, x)
    elif fmt == ".npz":
        with open(path, "wb") as f:  # np.savez would append .npz to a name without it
            np.savez(f, **({"x": x} if y is None else {"x": x, "y": y}))
    else:
        torch.save({"x": torch.from_numpy(np.ascontiguousarray(x))} |
                   ({} if y is None else {"y": torch.from_numpy(np.ascontiguousarray(y))}), path)
    return path


def everything(source):
    return [(inputs, y) for inputs, y in source]


# -- 1. NaN / Inf -------------------------------------------------------------------------------------------
@FAST
@given(n=st.integers(1, 40), bad=st.lists(st.tuples(st.integers(0, 39), st.integers(0, 5),
                                                     st.sampled_from([np.nan, np.inf, -np.inf])), max_size=6),
       fmt=st.sampled_from([".npy", ".npz", ".pt"]), batches=st.integers(1, 3))
@example(n=4, bad=[(0, 0, np.nan)], fmt=".npz", batches=1)
def test_nan_or_inf_in_the_samples_used_is_refused_with_a_count(tmp_path, n, bad, fmt, batches):
    x = np.ones((n, 6), np.float32)
    for row, col, value in bad:
        if row < n:
            x[row, col] = value
    path = save(tmp_path / f"calib{fmt}", x)
    used = min(n, 4 * batches)
    expected = int((~np.isfinite(x[:used])).sum())
    if expected == 0:  # NaN only beyond the samples used (or none at all): nothing wrong with what is read
        source = open_source(str(path), VEC6, batch_size=4, max_batches=batches)
        assert all(torch.isfinite(inputs[0]).all() for inputs, _ in source)
        return
    with pytest.raises(QtappError) as exc:
        open_source(str(path), VEC6, batch_size=4, max_batches=batches)
    message = str(exc.value)
    assert str(path) in message and f"{expected} NaN/Inf" in message


# -- 2. dtypes ----------------------------------------------------------------------------------------------
@FAST
@given(dtype=st.sampled_from(["int8", "int16", "int32", "int64", "uint16", "bool", "complex64"]),
       fmt=st.sampled_from([".npy", ".npz", ".pt"]))
def test_non_float_data_for_a_float_model_is_fed_as_float_or_refused_naming_both_dtypes(tmp_path, dtype, fmt):
    path = save(tmp_path / f"calib{fmt}", np.ones((4, 6), dtype))
    if dtype in ("bool", "complex64"):  # no numbers a float model can take
        with pytest.raises(QtappError) as exc:
            open_source(str(path), VEC6, batch_size=4, max_batches=1)
        message = str(exc.value)
        assert str(path) in message and dtype in message and "float32" in message
        return
    source = open_source(str(path), VEC6, batch_size=4, max_batches=1)  # integers: numbers, fed as stored
    (inputs, _), = everything(source)
    assert inputs[0].dtype == torch.float32 and inputs[0].tolist() == [[1.0] * 6] * 4
    assert source.dtype == "float32"
    assert source.notes == [f"{path} holds {dtype} values: fed to the model as float32, as stored "
                            "(not scaled nor normalised)"]


@FAST
@given(dtype=st.sampled_from(["float16", "float32", "float64"]), fmt=st.sampled_from([".npy", ".npz", ".pt"]))
def test_float_data_for_a_token_model_is_refused(tmp_path, dtype, fmt):
    path = save(tmp_path / f"ids{fmt}", np.ones((4, 6), dtype))
    with pytest.raises(QtappError) as exc:
        open_source(str(path), TOKENS, batch_size=4, max_batches=1)
    message = str(exc.value)
    assert str(path) in message and dtype in message and "int64" in message


def test_uint8_inputs_are_converted_to_float_and_said(tmp_path):
    path = save(tmp_path / "pixels.npy", np.full((3, 6), 200, np.uint8))
    source = open_source(str(path), VEC6, batch_size=4, max_batches=1)
    (inputs, _), = everything(source)
    assert inputs[0].dtype == torch.float32 and float(inputs[0].max()) == 200.0
    assert source.dtype == "float32"
    assert any("uint8" in note and "0..255" in note for note in source.notes)


def test_integer_ids_are_fed_in_the_model_dtype(tmp_path):
    path = save(tmp_path / "ids.npy", np.arange(12, dtype=np.int32).reshape(2, 6))
    source = open_source(str(path), TOKENS, batch_size=4, max_batches=1)
    (inputs, _), = everything(source)
    assert inputs[0].dtype == torch.int64 and source.dtype == "int64"
    assert inputs[0].tolist() == [list(range(6)), list(range(6, 12))]


def test_float_data_is_fed_in_the_model_float_dtype(tmp_path):
    path = save(tmp_path / "x.npy", np.ones((2, 6), np.float64))
    (inputs, _), = everything(open_source(str(path), VEC6, batch_size=4, max_batches=1))
    assert inputs[0].dtype == torch.float32
    (inputs, _), = everything(open_source(str(path), InputSpec.parse("1,6", "float64"), 4, 1))
    assert inputs[0].dtype == torch.float64


# -- 3. labels ----------------------------------------------------------------------------------------------
OTHER_TASKS = {  # labels of other tasks: data, kept as stored, only not class ids
    "pitch_hz": (np.array([440.0, 261.6, 523.3, 330.0]), "real values"),
    "nan_target": (np.array([0.0, np.nan, 2.0, 1.0]), "real values"),
    "pair_ids": (np.array([0, -1, 0, 3]), "negative"),
    "boxes": (np.eye(4, dtype=np.float32), "2-D"),
    "complex": (np.array([1, 2, 3, 0], np.complex64), "complex"),
}


@FAST
@given(kind=st.sampled_from(sorted(OTHER_TASKS)), fmt=st.sampled_from([".npz", ".pt"]))
def test_labels_of_other_tasks_are_data_kept_as_stored(tmp_path, kind, fmt):
    y, named = OTHER_TASKS[kind]
    path = save(tmp_path / f"labelled{fmt}", np.zeros((4, 6), np.float32), y)
    source = open_source(str(path), VEC6, batch_size=4, max_batches=1)
    (_, got), = everything(source)
    assert source.has_labels and not source.class_ids and named in source.labels_are
    assert source.label_max is None
    assert str(got.dtype).removeprefix("torch.") == str(y.dtype) and np.array_equal(got.numpy(), y, equal_nan=True)


def test_bool_labels_are_class_ids(tmp_path):
    path = save(tmp_path / "b.npz", np.zeros((4, 6), np.float32), np.array([True, False, True, True]))
    source = open_source(str(path), VEC6, batch_size=4, max_batches=1)
    assert source.class_ids and source.label_max == 1


@FAST
@given(nx=st.integers(1, 12), ny=st.integers(0, 12), fmt=st.sampled_from([".npz", ".pt"]))
def test_x_and_y_of_different_lengths_are_refused(tmp_path, nx, ny, fmt):
    path = save(tmp_path / f"labelled{fmt}", np.zeros((nx, 6), np.float32), np.zeros(ny, np.int64))
    if nx == ny:
        assert open_source(str(path), VEC6, batch_size=4, max_batches=8).samples == nx
        return
    with pytest.raises(QtappError) as exc:
        open_source(str(path), VEC6, batch_size=4, max_batches=8)
    message = str(exc.value)
    assert str(path) in message and f"{nx} samples" in message and f"{ny} labels" in message


def test_integral_float_labels_are_class_ids_and_label_max_is_exposed(tmp_path):
    path = save(tmp_path / "d.npz", np.zeros((5, 6), np.float32), np.array([0.0, 3.0, 1.0, 2.0, 7.0]))
    source = open_source(str(path), VEC6, batch_size=4, max_batches=1)  # 4 of the 5 samples used
    (_, y), = everything(source)
    assert y.dtype == torch.float64 and y.tolist() == [0, 3, 1, 2]  # as stored
    assert source.class_ids and source.label_max == 3


# -- 4. special files ---------------------------------------------------------------------------------------
def _open_in_thread(*args, **kwargs):
    """open_source in a thread: a FIFO opened for reading would block it (and the test) forever."""
    result = {}

    def run():
        try:
            result["source"] = open_source(*args, **kwargs)
            everything(result["source"])
        except Exception as exc:  # noqa: BLE001 - handed to the test
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    return thread, result


def _release(fifo, thread):
    """Unblock a reader stuck on the FIFO (the code under test opened it), so the thread ends."""
    if thread.is_alive():
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        thread.join(10)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("name", ["calib.npy", "calib.npz", "calib.pt"])
def test_a_fifo_given_as_data_is_refused_without_opening_it(tmp_path, name):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    thread, result = _open_in_thread(str(fifo), VEC6, batch_size=4, max_batches=1)
    blocked = thread.is_alive()
    _release(fifo, thread)
    assert not blocked, f"open_source blocked on the FIFO {fifo}"
    assert isinstance(result.get("error"), QtappError)
    assert str(fifo) in str(result["error"]) and "not a regular file" in str(result["error"])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_in_an_image_folder_is_skipped_and_said(tmp_path):
    root = tmp_path / "images"
    (root / "cat").mkdir(parents=True)
    Image.new("RGB", (16, 16), (255, 0, 0)).save(root / "cat" / "a.png")
    fifo = root / "cat" / "b.png"
    os.mkfifo(fifo)
    thread, result = _open_in_thread(str(root), RGB16, batch_size=4, max_batches=1)
    blocked = thread.is_alive()
    _release(fifo, thread)
    assert not blocked, f"the image folder scan blocked on the FIFO {fifo}"
    source = result.get("source")
    assert source is not None, result.get("error")
    assert source.samples == 1 and any(str(fifo) in s and "not a regular file" in s for s in source.skipped)


# -- 5. the size of a run ------------------------------------------------------------------------------------
def test_data_specs_cap_the_samples_a_run_reads():
    from qtapp.core.config.recipe import MAX_DATA_SAMPLES, DataSpec, QuantRecipe

    with pytest.raises(UsageError) as exc:
        DataSpec(source="random", batches=10**9, batch_size=16)
    assert f"{MAX_DATA_SAMPLES:,}" in str(exc.value) and "batches" in str(exc.value)
    with pytest.raises(UsageError):
        QuantRecipe.from_dict({"version": 1, "model": "demo", "evaluation": {"batch_size": 10**8}})
    assert DataSpec(batches=MAX_DATA_SAMPLES // 16, batch_size=16).batches == MAX_DATA_SAMPLES // 16


# -- 6. compressed archives -------------------------------------------------------------------------------
def _zip_bomb(path, rows: int):
    """An .npz whose x member is `rows` x 3x32x32 float32 zeros: 12 KB per row unpacked, a few bytes packed."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (rows, 3, 32, 32)})
    chunk = bytes(3 * 32 * 32 * 4 * 256)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("x.npy", "w", force_zip64=True) as member:
            member.write(header.getvalue())
            for _ in range(rows // 256):
                member.write(chunk)
    return path


def test_a_compressed_npz_is_read_only_as_far_as_needed(tmp_path):
    path = _zip_bomb(tmp_path / "bomb.npz", 20480)  # 250 MB unpacked, 250 KB on disk
    assert path.stat().st_size < 2_000_000
    spec = InputSpec.parse("1,3,32,32")
    tracemalloc.start()
    try:
        source = open_source(str(path), spec, batch_size=16, max_batches=2)
        got = everything(source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert source.samples == 32 and sum(len(inputs[0]) for inputs, _ in got) == 32
    assert peak < 32_000_000, f"read {peak / 1e6:.0f} MB to use 32 samples (1.6 MB)"


def _valid_npz(x, y=None) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **({"x": x} if y is None else {"x": x, "y": y}))
    return buf.getvalue()


@FAST
@given(data=st.data())
@example(data=None)
def test_corrupt_archives_give_finite_batches_or_a_named_error(tmp_path, data):
    raw = bytearray(_valid_npz(np.ones((8, 6), np.float32), np.arange(8) % 3))
    if data is None:  # an NaN written into x's data
        start = raw.index(b"\x00\x00\x80\x3f")
        raw[start:start + 4] = b"\xff\xff\xff\xff"
    else:
        for _ in range(data.draw(st.integers(1, 6), label="flips")):
            i = data.draw(st.integers(0, len(raw) - 1), label="at")
            raw[i] = data.draw(st.sampled_from([0x00, 0x7F, 0xFF, raw[i] ^ 0x01]), label="byte")
        if data.draw(st.booleans(), label="truncate"):
            del raw[data.draw(st.integers(0, len(raw) - 1), label="cut"):]
    path = tmp_path / "d.npz"
    path.write_bytes(bytes(raw))
    try:
        source = open_source(str(path), VEC6, batch_size=4, max_batches=2)
        got = everything(source)
    except QtappError as exc:
        assert str(path) in str(exc)
        return
    for inputs, y in got:
        assert inputs[0].dtype == torch.float32 and inputs[0].shape[1:] == (6,)
        assert torch.isfinite(inputs[0]).all()
        assert y is None or (y.dtype == torch.int64 and (y >= 0).all())


def test_an_npz_member_claiming_more_rows_than_it_holds_is_named(tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**9, 6)})
    path = tmp_path / "liar.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x.npy", header.getvalue() + np.ones((4, 6), np.float32).tobytes())
    with pytest.raises(QtappError) as exc:
        open_source(str(path), VEC6, batch_size=16, max_batches=1)
    assert str(path) in str(exc.value) and "x" in str(exc.value) and "truncated" in str(exc.value)


# -- 8. several inputs -------------------------------------------------------------------------------------
TWO = InputSpec.parse("1,16;1,8")


def test_npz_with_x0_x1_gives_a_tuple_per_batch(tmp_path):
    a, b = np.ones((5, 16), np.float32), np.full((5, 8), 2.0, np.float32)
    with open(tmp_path / "two.npz", "wb") as f:
        np.savez(f, x0=a, x1=b, y=np.arange(5) % 4)
    source = open_source(str(tmp_path / "two.npz"), TWO, batch_size=4, max_batches=2)
    got = everything(source)
    assert [tuple(t.shape) for t in got[0][0]] == [(4, 16), (4, 8)]
    assert [tuple(t.shape) for t in got[1][0]] == [(1, 16), (1, 8)]
    assert source.has_labels and source.label_max == 3


@pytest.mark.parametrize("payload", ["tuple", "list", "dict_x0", "dict_x_tuple"])
def test_pt_files_with_several_inputs(tmp_path, payload):
    a, b = torch.ones(3, 16), torch.zeros(3, 8)
    obj = {"tuple": (a, b), "list": [a, b], "dict_x0": {"x0": a, "x1": b, "y": torch.tensor([0, 1, 2])},
           "dict_x_tuple": {"x": (a, b)}}[payload]
    torch.save(obj, tmp_path / "two.pt")
    (inputs, y), = everything(open_source(str(tmp_path / "two.pt"), TWO, batch_size=4, max_batches=1))
    assert torch.equal(inputs[0], a) and torch.equal(inputs[1], b)
    assert (y is not None) == (payload == "dict_x0")


def test_random_data_gives_one_tensor_per_input():
    (inputs, y), = everything(open_source("random", TWO, batch_size=3, max_batches=1))
    assert [tuple(t.shape) for t in inputs] == [(3, 16), (3, 8)] and y is None


def test_inputs_that_do_not_fit_the_model_are_named(tmp_path):
    with open(tmp_path / "two.npz", "wb") as f:
        np.savez(f, x0=np.ones((5, 16), np.float32), x1=np.ones((4, 8), np.float32))
    with pytest.raises(QtappError, match=r"x0 has 5 samples but x1 has 4"):
        open_source(str(tmp_path / "two.npz"), TWO, batch_size=4, max_batches=2)
    with open(tmp_path / "one.npz", "wb") as f:
        np.savez(f, x0=np.ones((5, 16), np.float32))
    with pytest.raises(QtappError, match=r"one.npz holds 1 input.*model takes 2"):
        open_source(str(tmp_path / "one.npz"), TWO, batch_size=4, max_batches=2)
    with open(tmp_path / "bad.npz", "wb") as f:
        np.savez(f, x0=np.ones((5, 16), np.float32), x1=np.ones((5, 9), np.float32))
    with pytest.raises(QtappError, match=r"input 2 .*Nx9.*Nx8"):
        open_source(str(tmp_path / "bad.npz"), TWO, batch_size=4, max_batches=2)


# -- 9. image folders ---------------------------------------------------------------------------------------
def _png(path, color=(255, 0, 0), size=(16, 16)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_a_corrupt_image_is_skipped_counted_and_said(tmp_path):
    root = tmp_path / "images"
    for i in range(3):
        _png(root / "cat" / f"{i}.png")
    bad = root / "cat" / "1b.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 8)
    source = open_source(str(root), RGB16, batch_size=2, max_batches=4)
    got = everything(source)
    assert source.samples == 3 and sum(len(inputs[0]) for inputs, _ in got) == 3
    assert len(source.skipped) == 1 and str(bad) in source.skipped[0]
    assert any("skipped 1 of 4 images" in note for note in source.notes)


def test_a_folder_of_only_unreadable_images_is_an_error_naming_them(tmp_path):
    root = tmp_path / "images"
    (root / "cat").mkdir(parents=True)
    (root / "cat" / "a.png").write_bytes(b"not an image")
    with pytest.raises(QtappError) as exc:
        open_source(str(root), RGB16, batch_size=2, max_batches=1)
    assert "a.png" in str(exc.value) and "no readable images" in str(exc.value)


@pytest.mark.parametrize("limit", [200, 100])  # 4,096 pixels: over the limit (a warning), over twice it (an error)
def test_an_image_over_pils_limit_is_read_downscaled_and_said(tmp_path, monkeypatch, limit):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    root = tmp_path / "images"
    _png(root / "cat" / "big.png", size=(64, 64))
    _png(root / "cat" / "small.png", size=(8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning must not escape as a mere warning
        source = open_source(str(root), RGB16, batch_size=2, max_batches=1)
        batches = everything(source)
    assert source.samples == 2 and source.skipped == [] and batches[0][0][0].shape == (2, 3, 16, 16)
    assert any(f"downscaled 1 image over {limit} " in n or "downscaled 1 images" in n for n in source.notes), source.notes
    assert Image.MAX_IMAGE_PIXELS == limit  # the caller's limit is left as it was


def test_preprocessing_is_described(tmp_path):
    _png(tmp_path / "images" / "cat" / "a.png", size=(300, 260))
    imagenet = open_source(str(tmp_path / "images"), InputSpec.parse("1,3,224,224"), 1, 1)
    assert "resize 256" in imagenet.preprocessing and "centre-crop 224" in imagenet.preprocessing
    assert "ImageNet mean/std" in imagenet.preprocessing
    plain = open_source(str(tmp_path / "images"), RGB16, 1, 1, preprocess="none")
    assert "resize to 16x16" in plain.preprocessing
    assert open_source("random", RGB16, 1, 1).preprocessing == "none (random tensors)"


def test_a_torchvision_weights_preset_is_used_for_auto(tmp_path):
    import torchvision.models as tvm

    weights = tvm.get_model_weights("efficientnet_b0").DEFAULT  # resize 256 bicubic, crop 224
    _png(tmp_path / "images" / "cat" / "a.png", size=(300, 260))
    spec = InputSpec.parse("1,3,224,224")
    source = open_source(str(tmp_path / "images"), spec, 1, 1, preset=(str(weights), weights.transforms()))
    assert str(weights) in source.preprocessing and "bicubic" in source.preprocessing
    (inputs, _), = everything(source)
    expected = weights.transforms()(Image.open(tmp_path / "images" / "cat" / "a.png").convert("RGB"))
    assert torch.allclose(inputs[0][0], expected)
    # an explicit preprocess wins over the weights' preset
    explicit = open_source(str(tmp_path / "images"), spec, 1, 1, preprocess="imagenet",
                           preset=(str(weights), weights.transforms()))
    assert str(weights) not in explicit.preprocessing


def test_torchvision_with_a_local_state_dict_brings_the_default_preset(tmp_path):
    import torchvision.models as tvm

    from qtapp.core.base.progress import drive
    from qtapp.core.model.loading import load_model

    torch.save(tvm.squeezenet1_1(weights=None).state_dict(), tmp_path / "sq.pth")
    loaded = drive(load_model("torchvision:squeezenet1_1", str(tmp_path / "sq.pth")))
    name, transform = loaded.preprocess
    assert name == str(tvm.get_model_weights("squeezenet1_1").DEFAULT)
    assert transform.crop_size == [224]
    assert any("preset" in note and name in note for note in loaded.notes)
    assert drive(load_model("torchvision:squeezenet1_1")).preprocess is None  # no weights: no preset
    # the session hands the preset to its image folders
    from qtapp.core.config.recipe import DataSpec, QuantRecipe
    from qtapp.core.run.session import QuantSession

    _png(tmp_path / "images" / "cat" / "a.png", size=(40, 30))
    recipe = QuantRecipe(model="torchvision:squeezenet1_1", calibration=DataSpec(str(tmp_path / "images"), 1, 1))
    assert f"{name} preset" in QuantSession(loaded, recipe).open_calibration().preprocessing
