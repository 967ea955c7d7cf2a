"""Calibration and evaluation data: the demo split, random tensors, an image folder or a tensor file.

`open_source()` checks the source up front (a regular file or a folder, not empty, finite values of the
model's dtype, labels that are class ids, items that fit the model's inputs) and returns a `DataSource`:
a re-iterable of `(inputs, y)` batches, `inputs` a tuple with one tensor per model input and `y` the
class ids or None, with the facts a report needs. Bad data raises a `QtappError` that names the file.
A tensor file is read a batch at a time (see tensor_files), and checked up front a piece at a time.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..base import demo
from ..base.errors import QtappError, UsageError
from ..base.inputs import DTYPES, InputSpec
from .images import open_image_folder
from .source import DataSource
from .tensor_files import TENSOR_SUFFIXES, Rows, check_regular, peek_dtype, read_tensor_file, size_text

# The up-front checks (NaN/Inf, integer ranges) read the samples used this much at a time, counted in
# 8-byte values (the widest a check converts to): they never hold a large file's samples whole.
CHECK_BYTES = 64 << 20


# Data sources that name no file: the model's own data (demo), random tensors, or whichever fits (auto)
SPECIAL_SOURCES = ("auto", "demo", "random")


def open_source(source: str, input_spec: InputSpec | None, batch_size: int, max_batches: int,
                preprocess="auto", split: str = "calib", seed: int = 0, preset=None,
                id_range: int | None = None) -> DataSource:
    """`split` picks the demo's calibration or evaluation split; `seed` varies random data; `preset`
    is a torchvision weights' (name, transform) that image folders use when `preprocess` is "auto";
    `id_range`: random integer inputs are ids in [0, id_range) (the model's smallest embedding table)."""
    if input_spec is None:
        raise UsageError("the model's input shape is unknown: give it with --input-shape, e.g. 1,3,224,224")
    if source == "demo":
        x, y = demo.load_split(split)
        return _from_tensors(f"demo {split} split", "demo", [("x", x)], y, {}, input_spec, batch_size,
                             max_batches, "none (the demo's stored tensors)")
    if source == "random":
        return _random(input_spec, batch_size, max_batches, seed, id_range)
    path = Path(source).expanduser()
    if not path.exists():
        raise QtappError(f"data source not found: {path} (use demo, random, an image folder or a "
                         ".npy/.npz/.pt file)")
    if path.is_dir():
        return open_image_folder(path, input_spec, batch_size, max_batches, preprocess, preset)
    check_regular(path)
    if path.suffix.lower() in TENSOR_SUFFIXES:
        tf = read_tensor_file(path, batch_size * max_batches)
        return _from_tensors(str(path), "tensor", tf.inputs, tf.y, tf.rows, input_spec, batch_size, max_batches,
                             "none (tensors used as stored)")
    raise QtappError(f"cannot use {path} as data: expected a folder of images or a .npy/.npz/.pt file")


def file_input_dtype(source: str, takes_ids: bool | None = None) -> str | None:
    """The input dtype a calibration source implies when none is given: "int64" (or "int32") for a
    tensor file of integer ids; None (float32) for anything else. uint8 is image-like: float.
    `takes_ids`: whether the model can take ids (it has an embedding). Integer data are ids only for a
    model that can (True); for one that cannot (False) they are numbers, fed as float; None (not known,
    e.g. before the model is loaded): the data alone decides."""
    path = Path(source).expanduser()
    if source in SPECIAL_SOURCES or path.suffix.lower() not in TENSOR_SUFFIXES or not path.exists() \
            or path.is_dir():
        return None  # open_source names what is wrong with a missing source
    name = peek_dtype(path)
    if takes_ids is False or name is None or name in ("uint8", "bool") \
            or name.startswith(("float", "complex", "bfloat")):
        return None
    return name if name in DTYPES else "int64"


def check_sample_shapes(shapes: list[tuple], names: list[str], spec: InputSpec, what: str) -> None:
    expected_shapes = spec.sample_shapes
    fmt = lambda s: "x".join(str(d) for d in ("N", *s))  # noqa: E731
    if len(shapes) != len(expected_shapes):
        raise QtappError(f"{what} holds {len(shapes)} input{'s' if len(shapes) > 1 else ''} ({', '.join(names)}), "
                         f"but the model takes {len(expected_shapes)} (input spec {spec}). A .npz gives several "
                         "inputs as x0, x1, ...; a .pt as a tuple of tensors")
    for i, (shape, expected) in enumerate(zip(shapes, expected_shapes)):
        if tuple(shape) == expected:
            continue
        if len(shapes) == 1:
            raise QtappError(f"{what} holds samples of shape {fmt(shape)}, but the model's input is {fmt(expected)} "
                             f"(input spec {spec}). Fix the data or give --input-shape.")
        raise QtappError(f"{what}: input {i + 1} ({names[i]}) holds samples of shape {fmt(shape)}, but the model's "
                         f"input {i + 1} is {fmt(expected)} (input spec {spec}). Fix the data or give --input-shape.")


def _dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _check_feedable(dtype, spec: InputSpec, what: str, notes: list[str]) -> None:
    """Refuse data of `dtype` that cannot feed the model's input dtype, naming both; say in `notes` what a
    conversion does to the values."""
    import torch

    got = _dtype_name(dtype)
    if dtype == getattr(torch, spec.dtype):
        return
    if dtype == torch.bool or dtype.is_complex:
        raise QtappError(f"{what} holds {got} values, but the model takes {spec.dtype} inputs: "
                         f"{got} data cannot feed it; save the inputs as {spec.dtype}")
    if spec.is_float:
        if dtype == torch.uint8:  # image-like pixels: taken as they are, said in the report
            notes.append(f"{what} holds uint8 values: fed to the model as {spec.dtype} 0..255, as stored "
                         "(not scaled to [0, 1] nor normalised)")
        elif not dtype.is_floating_point:  # 16-bit sensors, pixels saved as int64: numbers, not ids
            notes.append(f"{what} holds {got} values: fed to the model as {spec.dtype}, as stored "
                         "(not scaled nor normalised)")
        return
    if dtype.is_floating_point:
        raise QtappError(f"{what} holds {got} values, but the model takes {spec.dtype} inputs (integer ids, "
                         "e.g. token ids): save the ids as integers, or give --input-dtype float32 if the model "
                         "takes floating-point inputs")


def check_input(data: Rows, n: int, spec: InputSpec, what: str, notes: list[str]) -> None:
    """Refuse the first `n` samples of `data` unless they can feed the model: a dtype it takes (a conversion
    said in `notes`), integers within its integer dtype, no NaN/Inf once converted. They are read
    CHECK_BYTES at a time, never whole."""
    import torch

    _check_feedable(data.dtype, spec, what, notes)
    target = getattr(torch, spec.dtype)
    if data.dtype == target and not target.is_floating_point:
        return  # ids as the model takes them: any value fits
    step = max(1, CHECK_BYTES // max(1, data.row_items * 8))
    bad = bad_stored = 0  # non-finite values as fed, and as stored
    largest = 0.0  # the largest magnitude stored, in pieces with values not finite as fed
    low, high = math.inf, -math.inf  # the integer range
    try:
        for start in range(0, n, step):
            stored = data.take(start, min(n, start + step))
            if target.is_floating_point:
                piece_bad, piece_bad_stored, piece_largest = _non_finite(stored, target)
                bad, bad_stored, largest = bad + piece_bad, bad_stored + piece_bad_stored, max(largest, piece_largest)
            elif stored.numel():
                wide = _widened(stored)
                low, high = min(low, int(wide.min())), max(high, int(wide.max()))
                del wide
            del stored
    except MemoryError:
        raise QtappError(f"{what}: not enough memory to check its {n:,} samples {size_text(CHECK_BYTES)} at a time: "
                         "give fewer --batches/--batch-size") from None
    if bad and not bad_stored:  # finite as stored (or integers): too large for the model's dtype
        raise QtappError(f"{what}: {bad} values are beyond the range of {spec.dtype} (largest {largest:.3g}): "
                         "scale the data to the model's input range")
    if bad:
        raise QtappError(f"{what} holds {bad} NaN/Inf values in the {n} samples used (of {n * data.row_items:,} "
                         "values): calibration would compute NaN ranges and evaluation NaN errors. Clean the data "
                         "(e.g. np.nan_to_num) or drop those samples")
    if not target.is_floating_point:
        info = torch.iinfo(target)
        if low < info.min or high > info.max:
            raise QtappError(f"{what} holds {_dtype_name(data.dtype)} values outside the range of the model's "
                             f"{spec.dtype} inputs")


def _non_finite(stored, target) -> tuple[int, int, float]:
    """(NaN/Inf values in `stored` as fed in `target`, NaN/Inf values as stored, the largest magnitude
    stored where some are not finite as fed)."""
    import torch

    fed = stored.to(target)
    # A NaN or Inf makes the sum NaN or Inf: a finite sum clears the piece at the cost of a sum (torch's
    # isfinite is ten times slower); only a piece whose sum is not finite is counted value by value.
    if bool(torch.isfinite(fed.sum(dtype=torch.float64 if target == torch.float64 else torch.float32))):
        return 0, 0, 0.0
    bad = int((~torch.isfinite(fed)).sum())
    if not bad:  # the sum overflowed
        return 0, 0, 0.0
    bad_stored = int((~torch.isfinite(stored)).sum()) if stored.dtype.is_floating_point else 0
    return bad, bad_stored, float(stored.to(torch.float64).abs().max())


def _widened(t):
    """`t` in a dtype torch can reduce and compare: uint16/32/64 have few kernels (no min, no <)."""
    import torch

    return t.to(torch.float64) if t.dtype in (torch.uint16, torch.uint32, torch.uint64) else t


def check_label_rows(shape: tuple, n: int, what: str) -> None:
    """Labels of any task have one row per sample; a scalar is no labels."""
    if not shape:
        raise QtappError(f"{what}: labels y are a single value, not one label per sample")


def label_kind(y) -> tuple[bool, str]:
    """(whether `y` are class ids: one integral, non-negative value per sample; what they are otherwise,
    in words for a withheld accuracy). Any numeric labels are data: this only decides what they can score."""
    import torch

    if y.dim() != 1:
        return False, f"labels y are {y.dim()}-D (shape {'x'.join(map(str, y.shape))}), not one class id per sample"
    if y.dtype == torch.bool:
        return True, ""
    if y.dtype.is_complex:
        return False, "labels y are complex numbers"
    w = _widened(y)
    if w.dtype.is_floating_point:
        bad = ~torch.isfinite(w) | (w != torch.round(w))
        if bool(bad.any()):
            return False, f"labels y are real values (e.g. {float(w[bad][0]):g}), not integer class ids"
    if len(w) and bool((w < 0).any()):
        return False, f"labels y hold negative values (lowest {int(w.min())}), not class ids 0..C-1"
    return True, ""


def _from_tensors(desc, kind, named, y, rows, spec, batch_size, max_batches, preprocessing) -> DataSource:
    """`named`: [(name, Rows or tensor)], `y`: Rows, a tensor or None; `rows`: the rows each array declares
    (when more than the Rows hold). The samples used are checked up front; a batch is read when made."""
    import torch

    named = [(name, t if isinstance(t, Rows) else Rows(t, desc)) for name, t in named]
    if y is not None and not isinstance(y, Rows):
        y = Rows(y, desc)
    names = [name for name, _ in named]
    total = {name: rows.get(name, t.rows) for name, t in named}
    for name in names[1:]:
        if total[name] != total[names[0]]:
            raise QtappError(f"{desc}: {names[0]} has {total[names[0]]} samples but {name} has {total[name]}: "
                             "every input needs one row per sample")
    if y is not None and rows.get("y", y.rows) != total[names[0]]:
        raise QtappError(f"{desc}: {names[0]} has {total[names[0]]} samples but y has {rows.get('y', y.rows)} "
                         "labels: give one label per sample")
    check_sample_shapes([t.shape[1:] for _, t in named], names, spec, desc)
    n = min(total[names[0]], batch_size * max_batches)
    if n == 0:
        raise QtappError(f"{desc} is empty: calibration needs at least one sample")
    notes: list[str] = []
    for name, t in named:
        check_input(t, n, spec, desc if len(named) == 1 else f"{desc} ({name})", notes)
    class_ids, labels_are = False, ""
    if y is not None:
        check_label_rows(tuple(y.shape), n, desc)
        y = y.take(0, n)  # as stored: a metric of the user's gets them exactly so
        class_ids, labels_are = label_kind(y)
    target = getattr(torch, spec.dtype)
    inputs = [t for _, t in named]

    def batches():
        for i in range(0, n, batch_size):
            j = min(n, i + batch_size)
            yield tuple(_batch(t, i, j, target) for t in inputs), (y[i:j].clone() if y is not None else None)

    return DataSource(desc, kind, True, -(-n // batch_size), n, y is not None, batches,
                      label_max=int(_widened(y).max()) if class_ids and len(y) else None, dtype=spec.dtype,
                      preprocessing="; ".join(notes) if notes else preprocessing, notes=notes,
                      class_ids=class_ids, labels_are=labels_are)


def _batch(data: Rows, start: int, stop: int, target):
    """Samples start:stop of `data`, read now, in the model's dtype."""
    try:
        return data.take(start, stop).to(target)
    except MemoryError:
        need = (stop - start) * data.row_items * (data.dtype.itemsize + target.itemsize)
        raise QtappError(f"{data.what} needs {size_text(need)} for a batch of {stop - start:,} samples: give a "
                         "smaller --batch-size") from None


def _random(spec: InputSpec, batch_size: int, max_batches: int, seed: int, id_range: int | None = None) -> DataSource:
    def batches():
        for i in range(max_batches):
            yield spec.example(batch=batch_size, seed=seed * 100003 + i, id_range=id_range), None

    if spec.is_float:
        what = "random normal tensors"
    elif id_range:
        what = f"random ids in [0, {id_range})"
    else:  # no embedding tells the range of these integers: zeros are at least valid ids
        what = "zeros (integer inputs of unknown range: give --calib with real ones)"
    return DataSource(f"{what} (seed {seed})", "random", False, max_batches,
                      batch_size * max_batches, False, batches, dtype=spec.dtype,
                      preprocessing="none (random tensors)")
