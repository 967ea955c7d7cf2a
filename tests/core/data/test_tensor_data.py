"""Tensor files as data (.npy, .npz, .pt): memory-mapped, so a run holds one batch of a large file, not the
file; integer data for a float model fed as float values; tensors that hold no values refused by name."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from qtapp.core.base.errors import QtappError
from qtapp.core.base.inputs import InputSpec
from qtapp.core.data import open as data_mod
from qtapp.core.data import tensor_files
from qtapp.core.data.open import file_input_dtype, open_source

REPO = Path(__file__).resolve().parents[3]
VEC6 = InputSpec.parse("1,6")
HALF6 = InputSpec.parse("1,6", "float16")
TOKENS = InputSpec.parse("1,6", "int64")
IMAGE = InputSpec.parse("1,3,64,64")  # 48 KB a sample in float32


def everything(source):
    return [(inputs, y) for inputs, y in source]


def stacked(source):
    """All the batches' first inputs (and labels), concatenated."""
    got = everything(source)
    y = [y for _, y in got if y is not None]
    return torch.cat([inputs[0] for inputs, _ in got]), (torch.cat(y) if y else None)


def savez(path: Path, compressed: bool = False, **arrays) -> Path:
    with open(path, "wb") as f:  # np.savez would append .npz to a name without it
        (np.savez_compressed if compressed else np.savez)(f, **arrays)
    return path


def sparse_npy(path: Path, shape, dtype="<f4") -> Path:
    """A .npy of zeros that costs no disk: the header, then a hole up to the declared size."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
        f.truncate(f.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize)
    return path


# -- A. memory -------------------------------------------------------------------------------------------------
RSS_SCRIPT = r"""
import json, sys

def rss_anon():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024

import numpy, torch
from qtapp.core.data.open import open_source
from qtapp.core.base.inputs import InputSpec

path, shape, batch_size, max_batches = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
baseline = rss_anon()
source = open_source(path, InputSpec.parse(shape), batch_size=batch_size, max_batches=max_batches)
after_open = rss_anon()
peak, seen = after_open, 0
for _ in range(2):  # calibration iterates its data more than once
    for inputs, _ in source:
        seen += len(inputs[0])
        peak = max(peak, rss_anon())
print(json.dumps({"baseline": baseline, "after_open": after_open, "peak": peak, "seen": seen,
                  "samples": source.samples, "batches": source.n_batches}))
"""


def _rss_anon_run(path: Path, shape: str, batch_size: int, max_batches: int) -> dict:
    """Open and iterate `path` twice in a fresh interpreter; its RssAnon before, after opening and at its peak."""
    proc = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(path), shape, str(batch_size), str(max_batches)],
                          capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RssAnon from /proc")
def test_a_large_npy_is_memory_mapped_one_batch_at_a_time(tmp_path):
    rows = 50_000  # 2.5 GB of float32 3x64x64 samples: a hole on disk
    path = sparse_npy(tmp_path / "big.npy", (rows, 3, 64, 64))
    size = path.stat().st_size
    assert size > 2.4e9
    got = _rss_anon_run(path, "1,3,64,64", batch_size=1000, max_batches=50)
    assert got["samples"] == rows and got["batches"] == 50 and got["seen"] == 2 * rows
    grown = got["peak"] - got["baseline"]
    # a batch is 49 MB, the up-front checks read at most 64 MB at a time: some 100 MB, not the 2.5 GB file
    assert grown < 400e6, f"anonymous memory grew by {grown / 1e6:.0f} MB for a {size / 1e9:.1f} GB file: {got}"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RssAnon from /proc")
def test_a_large_pt_is_not_cloned_into_memory(tmp_path):
    x = torch.zeros(12_000, 3, 64, 64)  # 590 MB
    x[-1, 0, 0, 0] = 7.0
    torch.save({"x": x, "y": torch.arange(12_000) % 10}, tmp_path / "big.pt")
    del x
    got = _rss_anon_run(tmp_path / "big.pt", "1,3,64,64", batch_size=1000, max_batches=12)
    assert got["samples"] == 12_000 and got["seen"] == 24_000
    grown = got["peak"] - got["baseline"]
    assert grown < 250e6, f"anonymous memory grew by {grown / 1e6:.0f} MB for a 590 MB file: {got}"


@pytest.mark.parametrize("fmt", [".npy", ".npz"])
def test_only_a_batch_of_a_mapped_file_is_held_at_once(tmp_path, monkeypatch, fmt):
    """numpy reports its buffers to tracemalloc: reading the 24 MB file whole would show; a batch is 0.5 MB."""
    monkeypatch.setattr(data_mod, "CHECK_BYTES", 1 << 20, raising=False)  # the up-front checks: 1 MB at a time
    x = np.arange(1_000_000 * 6, dtype=np.float32).reshape(1_000_000, 6) % 1000
    path = tmp_path / f"d{fmt}"
    if fmt == ".npy":
        np.save(path, x)
    else:
        savez(path, x=x, y=np.arange(1_000_000) % 7)  # stored: np.savez does not compress
    tracemalloc.start()
    try:
        source = open_source(str(path), VEC6, batch_size=20_000, max_batches=50)
        for inputs, y in source:
            assert inputs[0].dtype == torch.float32 and len(inputs[0]) == 20_000
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert source.samples == 1_000_000 and source.n_batches == 50
    assert peak < 12_000_000, f"held {peak / 1e6:.0f} MB at once to read a {x.nbytes / 1e6:.0f} MB file"
    if fmt == ".npz":
        assert source.label_max == 6


def _deflated(path: Path, rows: int) -> Path:
    """A compressed .npz whose x member is `rows` x 6 float32 ones."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        buf = io.BytesIO()
        np.save(buf, np.ones((rows, 6), np.float32))
        zf.writestr("x.npy", buf.getvalue())
    return path


def test_running_out_of_memory_reading_a_compressed_member_is_named(tmp_path, monkeypatch):
    path = _deflated(tmp_path / "packed.npz", 250_000)  # 6 MB unpacked
    real_read = zipfile.ZipExtFile.read

    def starved(self, n=-1):
        if n is None or n < 0 or n > 65536:
            raise MemoryError
        return real_read(self, n)

    monkeypatch.setattr(zipfile.ZipExtFile, "read", starved)
    with pytest.raises(QtappError) as exc:
        open_source(str(path), VEC6, batch_size=1000, max_batches=250)
    message = str(exc.value)
    assert str(path) in message and "(array x)" in message
    assert "needs 6.0 MB for 250,000 samples" in message and "--batches/--batch-size" in message
    assert "uncompressed" in message


def test_a_compressed_member_larger_than_the_free_memory_is_refused_before_reading(tmp_path, monkeypatch):
    path = _deflated(tmp_path / "packed.npz", 250_000)
    monkeypatch.setattr(tensor_files, "_available_memory", lambda: 1_000_000)
    with pytest.raises(QtappError, match=r"packed.npz \(array x\) needs 6.0 MB for 250,000 samples"):
        open_source(str(path), VEC6, batch_size=1000, max_batches=250)
    # a run that fits is read as before
    assert open_source(str(path), VEC6, batch_size=1000, max_batches=10).samples == 10_000


FORMS = {
    "npy": lambda p, x, y: np.save(p, x),
    "npy_fortran": lambda p, x, y: np.save(p, np.asfortranarray(x)),
    "npy_big_endian": lambda p, x, y: np.save(p, x.astype(">f4")),
    "npz_stored": lambda p, x, y: savez(p, x=x, y=y),
    "npz_stored_fortran": lambda p, x, y: savez(p, x=np.asfortranarray(x), y=y.astype(">i8")),
    "npz_compressed": lambda p, x, y: savez(p, True, x=x, y=y),
    "npz_compressed_fortran": lambda p, x, y: savez(p, True, x=np.asfortranarray(x), y=y),
    "pt": lambda p, x, y: torch.save({"x": torch.from_numpy(x), "y": torch.from_numpy(y)}, p),
    "pt_view": lambda p, x, y: torch.save({"x": torch.from_numpy(x).t().contiguous().t(), "y": torch.from_numpy(y)}, p),
}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_every_form_gives_the_stored_rows_in_order_as_the_callers_own(tmp_path, form):
    x = np.random.default_rng(1).standard_normal((11, 6)).astype(np.float32)
    y = np.arange(11) % 4
    path = tmp_path / f"d.{form.split('_')[0]}"
    FORMS[form](path, x, y)
    source = open_source(str(path), VEC6, batch_size=4, max_batches=2)  # 8 of the 11 samples
    first, labels = stacked(source)
    assert first.dtype == torch.float32 and first.is_contiguous()
    assert torch.equal(first, torch.from_numpy(x[:8]))
    assert (labels is None) == form.startswith("npy") and source.samples == 8 and source.n_batches == 2
    if labels is not None:
        assert labels.tolist() == y[:8].tolist() and source.label_max == 3
    # a model that writes into its input writes neither into the file's map nor into the next pass
    for inputs, _ in source:
        inputs[0].mul_(5)
    again, _ = stacked(source)
    assert torch.equal(again, first)


@pytest.mark.parametrize("fmt", [".npy", ".npz", ".pt"])
def test_a_file_rewritten_while_in_use_is_named_not_a_crash(tmp_path, fmt):
    """A mapped file truncated under the map would kill the process (SIGBUS) at the next read."""
    path = tmp_path / f"d{fmt}"
    x = np.ones((64, 6), np.float32)
    if fmt == ".npy":
        np.save(path, x)
    elif fmt == ".npz":
        savez(path, x=x)
    else:
        torch.save(torch.from_numpy(x), path)
    source = open_source(str(path), VEC6, batch_size=16, max_batches=4)
    with open(path, "r+b") as f:  # np.save over the same file: truncated first, then written
        f.truncate(64)
    with pytest.raises(QtappError) as exc:
        everything(source)
    assert str(path) in str(exc.value) and "changed" in str(exc.value)
    if fmt != ".pt":  # opened again, the header's promise is checked against what is left
        with open(path, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (64, 6)})
            f.write(x[:10].tobytes())
        if fmt == ".npz":
            raw = path.read_bytes()
            with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
                zf.writestr("x.npy", raw)
        with pytest.raises(QtappError) as exc:
            open_source(str(path), VEC6, batch_size=16, max_batches=4)
        assert str(path) in str(exc.value) and "truncated" in str(exc.value)


# -- B. integer data for a float model ------------------------------------------------------------------------
def _save(path: Path, x):
    if path.suffix == ".npy":
        np.save(path, x)
    elif path.suffix == ".npz":
        savez(path, x=x)
    else:
        torch.save(torch.from_numpy(x), path)
    return path


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64", "uint16", "uint32", "uint64"])
@pytest.mark.parametrize("fmt", [".npy", ".npz", ".pt"])
def test_integer_data_for_a_float_model_is_fed_as_float_values_as_stored(tmp_path, dtype, fmt):
    low = -100 if dtype.startswith("int") else 0
    x = (np.arange(24).reshape(4, 6) * 5 + low).astype(dtype)
    path = _save(tmp_path / f"pixels{fmt}", x)
    source = open_source(str(path), VEC6, batch_size=4, max_batches=1)
    (inputs, _), = everything(source)
    assert inputs[0].dtype == torch.float32 and inputs[0].tolist() == x.astype(np.float32).tolist()
    assert source.dtype == "float32"
    note = f"{path} holds {dtype} values: fed to the model as float32, as stored (not scaled nor normalised)"
    assert source.notes == [note] and note in source.preprocessing


def test_integers_beyond_a_float16_model_range_are_named(tmp_path):
    path = _save(tmp_path / "counts.npy", np.full((4, 6), 70_000, np.int32))
    with pytest.raises(QtappError) as exc:
        open_source(str(path), HALF6, batch_size=4, max_batches=1)
    assert str(path) in str(exc.value) and "24 values are beyond the range of float16" in str(exc.value)
    assert "largest 7e+04" in str(exc.value)


@pytest.mark.parametrize("dtype, ids", [("int64", "int64"), ("int32", "int32"), ("uint16", "int64"),
                                        ("int8", "int64"), ("uint8", None), ("float32", None), ("bool", None)])
def test_integer_data_implies_ids_only_for_a_model_that_takes_ids(tmp_path, dtype, ids):
    path = str(_save(tmp_path / "d.npy", np.ones((4, 6), dtype)))
    assert file_input_dtype(path, takes_ids=True) == ids
    assert file_input_dtype(path, takes_ids=False) is None
    assert file_input_dtype(path) == file_input_dtype(path, takes_ids=None) == ids  # unknown: the data decides
    assert file_input_dtype("random", takes_ids=True) is None


# -- C. tensors without values --------------------------------------------------------------------------------
@pytest.mark.parametrize("payload, name", [
    (lambda: torch.empty(4, 6, device="meta"), "x"),
    (lambda: {"x": torch.ones(4, 6), "y": torch.empty(4, dtype=torch.long, device="meta")}, "y"),
    (lambda: (torch.ones(4, 6), torch.empty(4, 6, device="meta")), "x1"),
])
def test_a_meta_tensor_is_refused_by_name(tmp_path, payload, name):
    path = tmp_path / "shapes.pt"
    torch.save(payload(), path)
    spec = InputSpec.parse("1,6;1,6") if name == "x1" else VEC6
    with pytest.raises(QtappError) as exc:
        open_source(str(path), spec, batch_size=4, max_batches=1)
    assert str(exc.value) == f"{path}: {name} is a meta-device tensor (shapes only, no values): save the real data"
    with pytest.raises(QtappError, match="meta-device"):
        file_input_dtype(str(path))


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch on loading sparse and quantized tensors
def test_sparse_quantized_and_scalar_label_tensors_are_refused_by_name(tmp_path):
    cases = {
        "sparse.pt": (torch.ones(4, 6).to_sparse(), "x is a sparse_coo tensor"),
        "scalar_y.pt": ({"x": torch.ones(1, 6), "y": torch.tensor(1)}, "labels y are 0-D"),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized tensor creation is deprecated
        quantized = torch.quantize_per_tensor(torch.ones(4, 6), 0.1, 0, torch.quint8)
    cases["quantized.pt"] = (quantized, "x is a quantized tensor (quint8): save x.dequantize()")
    for name, (obj, expected) in cases.items():
        torch.save(obj, tmp_path / name)
        with pytest.raises(QtappError) as exc:
            open_source(str(tmp_path / name), VEC6, batch_size=4, max_batches=1)
        assert str(tmp_path / name) in str(exc.value) and expected in str(exc.value), str(exc.value)
