"""Tensor files as data (.npy, .npz, .pt): only the samples a run uses are read, and nothing but regular files.

An `.npz` member is read from its zip stream up to the rows needed: a small archive of zeros that unpacks
to gigabytes costs what the run uses, not what the archive could become. `.npy` files are read the same
way; `.pt` files are memory-mapped. Every failure is a `QtappError` that names the file (and the member).
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from .errors import QtappError

TENSOR_SUFFIXES = {".npy", ".npz", ".pt", ".pth"}
# A Fortran-ordered array cannot be cut to its first rows while streaming: it is read whole, up to this.
MAX_WHOLE_ARRAY_BYTES = 1 << 30


@dataclass
class TensorFile:
    """The first `limit` rows of each array, and the full row count each array declares."""

    inputs: list  # [(name, tensor)]: "x", or "x0", "x1", ... for several inputs
    y: object | None = None
    rows: dict = field(default_factory=dict)  # name -> rows in the file (x, x0, ..., y)


def check_regular(path: Path, what: str = "data file") -> os.stat_result:
    """stat, never open: a FIFO opened for reading blocks until a writer comes, a device never ends."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise QtappError(f"cannot read {what} {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise QtappError(f"{what} {path} is not a regular file (a FIFO, socket or device): give a .npy, .npz "
                         "or .pt file, or a folder of images")
    return st


def read_tensor_file(path: Path, limit: int) -> TensorFile:
    suffix = path.suffix.lower()  # any case: CALIB.NPY is a .npy file
    size = check_regular(path).st_size
    try:
        if suffix == ".npy":
            with open(path, "rb") as f:
                arr, rows = read_npy_rows(f, limit, size, str(path))
            return TensorFile([("x", _to_torch(arr))], None, {"x": rows})
        if suffix == ".npz":
            return _read_npz(path, limit)
        return _read_pt(path, limit)
    except QtappError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets a message naming it
        raise QtappError(f"cannot read tensor file {path}: {type(exc).__name__}: {exc}") from None


def read_npy_rows(f, limit: int, available: int, what: str):
    """The first `limit` rows of the .npy stream `f` (whose whole size is `available` bytes), and the
    number of rows its header declares."""
    import numpy as np
    from numpy.lib import format as npf

    version = npf.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = npf.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = npf.read_array_header_2_0(f)
    else:
        raise QtappError(f"{what}: .npy format version {version[0]}.{version[1]} is not supported (1.0 and 2.0 are)")
    if dtype.hasobject or dtype.kind not in "biufc":
        raise QtappError(f"{what} holds {dtype} values, not numbers (Python objects and strings are not read)")
    if not shape:
        raise QtappError(f"{what} holds a single value, not an array of samples (N x ...)")
    row_items = math.prod(shape[1:])
    declared = shape[0] * row_items * dtype.itemsize
    left = available - f.tell()
    if declared > left:
        raise QtappError(f"{what} is truncated or corrupt: its header declares shape {'x'.join(map(str, shape))} "
                         f"({declared:,} bytes), but only {max(left, 0):,} bytes follow")
    rows = min(shape[0], limit)
    if fortran and len(shape) > 1:  # column-major: the first rows are not contiguous
        if declared > MAX_WHOLE_ARRAY_BYTES:
            raise QtappError(f"{what} is a Fortran-ordered array of {declared / 1e9:.1f} GB: it cannot be read "
                             "row by row; save it in C order (np.ascontiguousarray) or fewer samples")
        flat = np.frombuffer(_read_exactly(f, declared, what), dtype=dtype)
        arr = flat.reshape(shape[::-1]).transpose()[:rows]
    else:
        need = rows * row_items * dtype.itemsize
        arr = np.frombuffer(_read_exactly(f, need, what), dtype=dtype).reshape((rows, *shape[1:]))
    return np.array(arr, dtype=dtype.newbyteorder("=")), shape[0]


def _read_exactly(f, n: int, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise QtappError(f"{what} is truncated: {len(data):,} of {n:,} bytes could be read")
    return data


def _to_torch(arr):
    import torch

    return torch.from_numpy(arr)


def _read_npz(path: Path, limit: int) -> TensorFile:
    import zipfile

    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise QtappError(f"{path} is not a valid .npz (zip) archive") from None
    with zf:
        members = {info.filename[:-4]: info for info in zf.infolist() if info.filename.endswith(".npy")}
        names = _input_names(members, path)
        out = TensorFile([])
        for name in [*names, *(["y"] if "y" in members else [])]:
            info = members[name]
            what = f"{path} (array {name})"
            with zf.open(info) as member:
                arr, rows = read_npy_rows(member, limit, info.file_size, what)
            out.rows[name] = rows
            if name == "y":
                out.y = _to_torch(arr)
            else:
                out.inputs.append((name, _to_torch(arr)))
        return out


def _input_names(members, path: Path) -> list[str]:
    numbered = []
    while f"x{len(numbered)}" in members:
        numbered.append(f"x{len(numbered)}")
    if "x" in members and numbered:
        raise QtappError(f"{path} holds both 'x' and 'x0': use 'x' for one input, or x0, x1, ... for several")
    if "x" in members:
        return ["x"]
    if numbered:
        return numbered
    raise QtappError(f"{path} has no array named 'x' (found: {', '.join(sorted(members)) or 'nothing'}); "
                     "several inputs go in x0, x1, ...")


def _read_pt(path: Path, limit: int) -> TensorFile:
    import torch

    try:  # memory-mapped: only the rows used are paged in
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise
        obj = torch.load(path, map_location="cpu", weights_only=True)  # the legacy (pre-zip) format
    y = None
    if isinstance(obj, dict):
        y = obj.get("y")
        if "x" in obj:
            obj = obj["x"]
        elif "x0" in obj:
            n = 0
            while f"x{n}" in obj:
                n += 1
            obj = [obj[f"x{i}"] for i in range(n)]
    if isinstance(obj, torch.Tensor):
        named = [("x", obj)]
    elif isinstance(obj, (tuple, list)) and obj and all(isinstance(t, torch.Tensor) for t in obj):
        named = [(f"x{i}", t) for i, t in enumerate(obj)]
    else:
        raise QtappError(f"{path} must hold a tensor or a dict with tensor 'x' (or x0, x1, ...) and optional 'y', "
                         "or a tuple/list of tensors (one per input)")
    if y is not None and not isinstance(y, torch.Tensor):
        raise QtappError(f"{path}: 'y' is a {type(y).__name__}, not a tensor of class ids")
    for name, t in named:
        if t.dim() == 0:
            raise QtappError(f"{path}: {name} is a single value, not a batch of samples (N x ...)")
    rows = {name: len(t) for name, t in named} | ({"y": len(y) if y.dim() else 1} if y is not None else {})
    cut = lambda t: t[:limit].clone() if t.dim() else t.clone()  # noqa: E731 - off the memory map
    return TensorFile([(name, cut(t)) for name, t in named], cut(y) if y is not None else None, rows)


def peek_dtype(path: Path) -> str | None:
    """The dtype name (numpy/torch spelling, e.g. "int64") of the file's first input, from its header
    (.npy, .npz) or its memory map (.pt); None when the file is not a tensor file."""
    if path.suffix.lower() not in TENSOR_SUFFIXES:
        return None
    tf = read_tensor_file(path, 1)
    return str(tf.inputs[0][1].dtype).removeprefix("torch.")
