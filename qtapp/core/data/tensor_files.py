"""Tensor files as data (.npy, .npz, .pt): only the samples a run uses are read, and nothing but regular files.

A `.npy` file, a stored (uncompressed) `.npz` member and a `.pt` file are memory-mapped: a batch reads its
rows when it is made (`Rows.take`), so a file of gigabytes costs a batch of memory, not its size. A
compressed `.npz` member cannot be mapped: it is read from its zip stream up to the rows needed (a small
archive of zeros that unpacks to gigabytes costs what the run uses, not what the archive could become),
and a read that does not fit in memory is refused with the size it needed. Every failure is a
`QtappError` that names the file (and the member).
"""

from __future__ import annotations

import math
import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path

from ..base.errors import QtappError

TENSOR_SUFFIXES = {".npy", ".npz", ".pt", ".pth"}
# A Fortran-ordered compressed member cannot be cut to its first rows while streaming: it is read whole,
# up to this. (A mapped Fortran-ordered array is read row by row through its map.)
MAX_WHOLE_ARRAY_BYTES = 1 << 30
READ_BYTES = 64 << 20  # a compressed member is unpacked this much at a time


@dataclass
class TensorFile:
    """Each array as `Rows` (its first `limit` rows, read when asked), and the full row count each declares."""

    inputs: list  # [(name, Rows)]: "x", or "x0", "x1", ... for several inputs
    y: object | None = None  # Rows of labels, or None
    rows: dict = field(default_factory=dict)  # name -> rows in the file (x, x0, ..., y)


class Rows:
    """The rows of one array that a run may use, read when a batch asks for them: a memory map of the
    file (.npy, a stored .npz member, .pt), or rows already in memory (a compressed member, a tensor)."""

    def __init__(self, data, what: str, rows: int | None = None, mapped: Path | None = None):
        import torch

        self.data = data  # a numpy array (a memory map, or in memory) or a torch tensor
        self.what = what  # the file (and member), for messages
        self.rows = len(data) if rows is None else rows  # rows the file declares; len() is the rows usable
        if isinstance(data, torch.Tensor):
            self.dtype = data.dtype
        else:  # torch's name for it, or a TypeError for a dtype torch has not (e.g. float128)
            self.dtype = torch.from_numpy(_native_empty(data.dtype)).dtype
        self._mapped = mapped
        self._stamp = _stamp(mapped) if mapped is not None else None

    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def dim(self) -> int:
        return len(self.shape)

    @property
    def row_items(self) -> int:
        return math.prod(self.shape[1:])

    def take(self, start: int, stop: int):
        """Rows start:stop as a tensor of their own (C order, native byte order): what the model does to it
        reaches neither the file nor the next pass over the data."""
        import numpy as np
        import torch

        self._check_unchanged()
        if isinstance(self.data, torch.Tensor):
            return self.data[start:stop].clone(memory_format=torch.contiguous_format)
        part = self.data[start:stop]
        return torch.from_numpy(np.array(part, dtype=part.dtype.newbyteorder("="), order="C"))

    def _check_unchanged(self) -> None:
        """A mapped file truncated in place would kill the process (SIGBUS) at the next read of its map:
        a file changed since it was opened is refused. One replaced (a new file at the path) is not: the
        map still holds the file as it was."""
        if self._mapped is None:
            return
        try:
            now = _stamp(self._mapped)
        except OSError:
            return  # removed: the map keeps the file as it was
        if now[0] == self._stamp[0] and now != self._stamp:
            raise QtappError(f"{self.what} changed while it was in use (it is read through a memory map): "
                             "open the data again once it is written")


def _stamp(path: Path) -> tuple:
    st = os.stat(path)
    return (st.st_dev, st.st_ino), st.st_size, st.st_mtime_ns


def _native_empty(dtype):
    import numpy as np

    return np.empty(0, dtype.newbyteorder("="))


def size_text(nbytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


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
    """The arrays of `path`, each cut to its first `limit` rows: mapped, not read (headers aside), except a
    compressed .npz member, whose rows are unpacked into memory."""
    suffix = path.suffix.lower()  # any case: CALIB.NPY is a .npy file
    size = check_regular(path).st_size
    try:
        if suffix == ".npy":
            with open(path, "rb") as f:
                shape, fortran, dtype = read_npy_header(f, size, str(path))
                offset = f.tell()
            arr = _map(path, offset, shape, fortran, dtype, limit)
            return TensorFile([("x", Rows(arr, str(path), shape[0], path))], None, {"x": shape[0]})
        if suffix == ".npz":
            return _read_npz(path, limit, size)
        return _read_pt(path, limit)
    except QtappError:
        raise
    except MemoryError:
        raise QtappError(f"{path}: not enough memory to open it: give fewer --batches/--batch-size") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets a message naming it
        raise QtappError(f"cannot read tensor file {path}: {type(exc).__name__}: {exc}") from None


def read_npy_header(f, available: int, what: str):
    """(shape, fortran_order, dtype) of the .npy stream `f` (whose whole size is `available` bytes), left
    at the start of its data; refused when it holds no numbers or fewer bytes than it declares."""
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
    declared = math.prod(shape) * dtype.itemsize
    left = available - f.tell()
    if declared > left:
        raise QtappError(f"{what} is truncated or corrupt: its header declares shape {'x'.join(map(str, shape))} "
                         f"({declared:,} bytes), but only {max(left, 0):,} bytes follow")
    return shape, fortran, dtype


def _map(path: Path, offset: int, shape, fortran: bool, dtype, limit: int):
    """The first `limit` rows of the array at `offset` in `path`, memory-mapped (read-only)."""
    import numpy as np

    rows = min(shape[0], limit)
    if rows == 0 or math.prod(shape) == 0:  # nothing to map (mmap refuses an empty range)
        return np.empty((rows, *shape[1:]), dtype)
    if fortran and len(shape) > 1:  # column-major: the first rows are spread over the whole array
        return np.memmap(path, dtype, "r", offset, tuple(shape), order="F")[:rows]
    return np.memmap(path, dtype, "r", offset, (rows, *shape[1:]))


def read_npy_rows(f, limit: int, available: int, what: str):
    """The first `limit` rows of the .npy stream `f` (whose whole size is `available` bytes), read into
    memory as stored (byte order too), and the number of rows its header declares."""
    shape, fortran, dtype = read_npy_header(f, available, what)
    rows = min(shape[0], limit)
    row_items = math.prod(shape[1:])
    if fortran and len(shape) > 1:  # column-major: the first rows are not contiguous
        declared = shape[0] * row_items * dtype.itemsize
        if declared > MAX_WHOLE_ARRAY_BYTES:
            raise QtappError(f"{what} is a Fortran-ordered array of {declared / 1e9:.1f} GB: it cannot be read "
                             "row by row; save it in C order (np.ascontiguousarray) or fewer samples")
        flat = _read_array(f, shape[0] * row_items, dtype, what, shape[0])
        try:
            arr = flat.reshape(shape[::-1]).transpose()[:rows].copy()  # C order: the rest is let go
        except MemoryError:
            raise _out_of_memory(what, declared + rows * row_items * dtype.itemsize, shape[0]) from None
    else:
        arr = _read_array(f, rows * row_items, dtype, what, rows).reshape((rows, *shape[1:]))
    return arr, shape[0]


def _read_array(f, items: int, dtype, what: str, samples: int):
    """`items` values of `dtype` from the stream `f`, into one buffer filled a piece at a time."""
    import numpy as np

    n = items * dtype.itemsize
    try:
        buf = _allocate(n)
        got = 0
        while got < n:
            piece = f.read(min(READ_BYTES, n - got))
            if not piece:
                break
            buf[got:got + len(piece)] = np.frombuffer(piece, np.uint8)
            got += len(piece)
            del piece
    except MemoryError:
        raise _out_of_memory(what, n, samples) from None
    if got != n:
        raise QtappError(f"{what} is truncated: {got:,} of {n:,} bytes could be read")
    return buf.view(dtype)


def _allocate(nbytes: int):
    """A buffer of `nbytes`; MemoryError when the machine has not that much memory free: under Linux's
    overcommit the allocation itself would succeed, and filling it would bring the OOM killer instead."""
    import numpy as np

    free = _available_memory()
    if free is not None and nbytes > free:
        raise MemoryError
    return np.empty(nbytes, np.uint8)


def _available_memory() -> int | None:
    """The memory the kernel says can be allocated without swapping (MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _out_of_memory(what: str, nbytes: int, samples: int) -> QtappError:
    return QtappError(f"{what} needs {size_text(nbytes)} for {samples:,} samples; give fewer --batches/--batch-size "
                      "or an uncompressed file (np.savez, not np.savez_compressed: its arrays are read as needed)")


def _read_npz(path: Path, limit: int, size: int) -> TensorFile:
    import zipfile

    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise QtappError(f"{path} is not a valid .npz (zip) archive") from None
    with zf, open(path, "rb") as raw:
        members = {info.filename[:-4]: info for info in zf.infolist() if info.filename.endswith(".npy")}
        names = _input_names(members, path)
        out = TensorFile([])
        for name in [*names, *(["y"] if "y" in members else [])]:
            info = members[name]
            what = f"{path} (array {name})"
            if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1:  # stored, not encrypted
                with zf.open(info) as member:
                    shape, fortran, dtype = read_npy_header(member, min(info.file_size, info.compress_size), what)
                    offset = _member_data_start(raw, info, what) + member.tell()
                if offset + math.prod(shape) * dtype.itemsize > size:
                    raise QtappError(f"{what} is truncated: its data runs past the end of the archive")
                rows = shape[0]
                arr = Rows(_map(path, offset, shape, fortran, dtype, limit), what, rows, path)
            else:  # compressed: unpacked up to the rows used
                with zf.open(info) as member:
                    data, rows = read_npy_rows(member, limit, info.file_size, what)
                arr = Rows(data, what, rows)
            out.rows[name] = rows
            if name == "y":
                out.y = arr
            else:
                out.inputs.append((name, arr))
        return out


def _member_data_start(raw, info, what: str) -> int:
    """Where a zip member's data starts in the archive: after its local header, whose name and extra
    field may differ in length from the central directory's."""
    raw.seek(info.header_offset)
    header = raw.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise QtappError(f"{what}: the archive is corrupt (no local header where the directory points)")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len


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

    mapped = path
    try:  # memory-mapped: only the rows a batch uses are paged in
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise
        obj = torch.load(path, map_location="cpu", weights_only=True)  # the legacy (pre-zip) format: in memory
        mapped = None
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
    for name, t in [*named, *([("y", y)] if y is not None else [])]:
        _check_values(t, name, path)
    for name, t in named:
        if t.dim() == 0:
            raise QtappError(f"{path}: {name} is a single value, not a batch of samples (N x ...)")
    if y is not None and y.dim() == 0:
        raise QtappError(f"{path}: labels y are 0-D (a single value): give one label per sample (one row each)")
    rows = {name: len(t) for name, t in named} | ({"y": len(y)} if y is not None else {})
    return TensorFile([(name, Rows(t[:limit], str(path), len(t), mapped)) for name, t in named],
                      Rows(y[:limit], str(path), len(y), mapped) if y is not None else None, rows)


def _check_values(t, name: str, path: Path) -> None:
    """Refuse a tensor that holds no values to read as they are: on the meta device (shapes only), on
    another device, sparse, or quantized."""
    import torch

    if t.device.type == "meta":
        raise QtappError(f"{path}: {name} is a meta-device tensor (shapes only, no values): save the real data")
    if t.device.type != "cpu":
        raise QtappError(f"{path}: {name} is a {t.device.type} tensor: save it on the CPU ({name}.cpu())")
    if t.layout != torch.strided:
        layout = str(t.layout).removeprefix("torch.")
        raise QtappError(f"{path}: {name} is a {layout} tensor: save it dense ({name}.to_dense())")
    if t.is_quantized:
        raise QtappError(f"{path}: {name} is a quantized tensor ({str(t.dtype).removeprefix('torch.')}): save "
                         f"{name}.dequantize() (the float values) or {name}.int_repr() (the stored integers)")


def peek_dtype(path: Path) -> str | None:
    """The dtype name (numpy/torch spelling, e.g. "int64") of the file's first input, from its header
    (.npy, .npz) or its memory map (.pt); None when the file is not a tensor file."""
    if path.suffix.lower() not in TENSOR_SUFFIXES:
        return None
    tf = read_tensor_file(path, 1)
    return str(tf.inputs[0][1].dtype).removeprefix("torch.")
