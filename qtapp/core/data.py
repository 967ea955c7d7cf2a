"""Calibration and evaluation data: the demo split, random tensors, an image folder or a tensor file.

`open_source()` checks the source up front (a regular file or a folder, not empty, finite values of the
model's dtype, labels that are class ids, items that fit the model's inputs) and returns a `DataSource`:
a re-iterable of `(inputs, y)` batches, `inputs` a tuple with one tensor per model input and `y` the
class ids or None, with the facts a report needs. Bad data raises a `QtappError` that names the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from . import demo
from .errors import QtappError, UsageError
from .inputs import DTYPES, InputSpec
from .tensor_files import TENSOR_SUFFIXES, check_regular, peek_dtype, read_tensor_file


@dataclass
class DataSource:
    description: str
    kind: str  # demo | random | folder | tensor
    representative: bool
    n_batches: int
    samples: int
    has_labels: bool
    _batches: Callable[[], Iterator[tuple]]
    label_max: int | None = None  # the largest class id among the labels used; None without labels
    dtype: str | None = None  # dtype of the input tensors fed to the model, e.g. "float32", "int64"
    preprocessing: str = "none"  # what was done to the stored data before it reached the model
    skipped: list[str] = field(default_factory=list)  # items left out, each "path: reason"
    notes: list[str] = field(default_factory=list)  # what a report should say about this data

    def __iter__(self) -> Iterator[tuple[tuple, object]]:
        for inputs, y in self._batches():
            yield (tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)), y

    def __len__(self) -> int:
        return self.n_batches


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
        from .images import open_image_folder

        return open_image_folder(path, input_spec, batch_size, max_batches, preprocess, preset)
    check_regular(path)
    if path.suffix.lower() in TENSOR_SUFFIXES:
        tf = read_tensor_file(path, batch_size * max_batches)
        return _from_tensors(str(path), "tensor", tf.inputs, tf.y, tf.rows, input_spec, batch_size, max_batches,
                             "none (tensors used as stored)")
    raise QtappError(f"cannot use {path} as data: expected a folder of images or a .npy/.npz/.pt file")


def file_input_dtype(source: str) -> str | None:
    """The input dtype a calibration source implies when none is given: "int64" (or "int32") for a
    tensor file of integer ids; None (float32) for anything else. uint8 is image-like: float."""
    path = Path(source).expanduser()
    if source in ("demo", "random", "auto") or path.suffix.lower() not in TENSOR_SUFFIXES or not path.exists() \
            or path.is_dir():
        return None  # open_source names what is wrong with a missing source
    name = peek_dtype(path)
    if name is None or name in ("uint8", "bool") or name.startswith(("float", "complex", "bfloat")):
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


def to_model_dtype(t, spec: InputSpec, what: str, notes: list[str]):
    """`t` in the model's input dtype, or a refusal that names the data's dtype and the model's."""
    import torch

    target = getattr(torch, spec.dtype)
    got = _dtype_name(t.dtype)
    if t.dtype == target:
        return t
    if t.dtype == torch.bool or t.dtype.is_complex:
        raise QtappError(f"{what} holds {got} values, but the model takes {spec.dtype} inputs: "
                         f"{got} data cannot feed it; save the inputs as {spec.dtype}")
    if spec.is_float:
        if t.dtype.is_floating_point:
            return t.to(target)
        if t.dtype == torch.uint8:  # image-like pixels: taken as they are, said in the report
            notes.append(f"{what} holds uint8 values: fed to the model as {spec.dtype} 0..255, as stored "
                         "(not scaled to [0, 1] nor normalised)")
            return t.to(target)
        raise QtappError(f"{what} holds {got} values, but the model takes {spec.dtype} inputs. Integer data "
                         "looks like token ids or labels: if the model takes token ids, give --input-dtype int64 "
                         "(or leave it unset, so an integer calibration file sets it); otherwise save the "
                         f"inputs as {spec.dtype}")
    if t.dtype.is_floating_point:
        raise QtappError(f"{what} holds {got} values, but the model takes {spec.dtype} inputs (integer ids, "
                         "e.g. token ids): save the ids as integers, or give --input-dtype float32 if the model "
                         "takes floating-point inputs")
    info, wide = torch.iinfo(target), _widened(t)
    if len(t) and (int(wide.min()) < info.min or int(wide.max()) > info.max):
        raise QtappError(f"{what} holds {got} values outside the range of the model's {spec.dtype} inputs")
    return t.to(target)


def _widened(t):
    """`t` in a dtype torch can reduce and compare: uint16/32/64 have few kernels (no min, no <)."""
    import torch

    return t.to(torch.float64) if t.dtype in (torch.uint16, torch.uint32, torch.uint64) else t


def check_finite(t, what: str, n: int, stored=None) -> None:
    """Refuse NaN/Inf in `t` (the data as fed); `stored`, the data as read, tells overflow from NaN."""
    import torch

    if not t.dtype.is_floating_point:
        return
    bad = int((~torch.isfinite(t)).sum())
    if not bad:
        return
    if stored is not None and stored.dtype.is_floating_point and bool(torch.isfinite(stored).all()):
        raise QtappError(f"{what}: {bad} values are beyond the range of {_dtype_name(t.dtype)} (largest "
                         f"{float(stored.abs().max()):.3g}): scale the data to the model's input range")
    raise QtappError(f"{what} holds {bad} NaN/Inf values in the {n} samples used (of {t.numel():,} values): "
                     "calibration would compute NaN ranges and evaluation NaN errors. Clean the data "
                     "(e.g. np.nan_to_num) or drop those samples")


def check_labels(y, what: str):
    """`y` as int64 class ids (one per sample, integral, not negative), or a refusal naming the problem."""
    import torch

    if y.dim() != 1:
        hint = ": for one-hot or probability rows, give y.argmax(1)" if y.dim() == 2 else ""
        raise QtappError(f"{what}: labels y are {y.dim()}-D (shape {'x'.join(map(str, y.shape))}): give one "
                         f"class id per sample, a 1-D array of integers{hint}")
    got = _dtype_name(y.dtype)
    if y.dtype == torch.bool or y.dtype.is_complex:
        raise QtappError(f"{what}: labels y are {got}: give integer class ids 0..C-1")
    y = _widened(y)
    if y.dtype.is_floating_point:
        bad = ~torch.isfinite(y) | (y != torch.round(y))
        if bool(bad.any()):
            example = float(y[bad][0])
            raise QtappError(f"{what}: labels y are not integer class ids: {int(bad.sum())} of the {len(y)} labels "
                             f"used are fractional or NaN (e.g. {example:g}); give class ids 0..C-1")
    negative = int((y < 0).sum())
    if negative:
        raise QtappError(f"{what}: labels y hold {negative} negative values (lowest {int(y.min())}): class ids "
                         "are 0..C-1")
    return y.to(torch.int64)


def _from_tensors(desc, kind, named, y, rows, spec, batch_size, max_batches, preprocessing) -> DataSource:
    names = [name for name, _ in named]
    total = {name: rows.get(name, len(t)) for name, t in named}
    for name in names[1:]:
        if total[name] != total[names[0]]:
            raise QtappError(f"{desc}: {names[0]} has {total[names[0]]} samples but {name} has {total[name]}: "
                             "every input needs one row per sample")
    if y is not None and rows.get("y", len(y)) != total[names[0]]:
        raise QtappError(f"{desc}: {names[0]} has {total[names[0]]} samples but y has {rows.get('y', len(y))} "
                         "labels: give one label per sample")
    check_sample_shapes([tuple(t.shape[1:]) for _, t in named], names, spec, desc)
    n = min(total[names[0]], batch_size * max_batches)
    if n == 0:
        raise QtappError(f"{desc} is empty: calibration needs at least one sample")
    notes: list[str] = []
    inputs = []
    for name, t in named:
        what = desc if len(named) == 1 else f"{desc} ({name})"
        fed = to_model_dtype(t[:n], spec, what, notes)
        check_finite(fed, what, n, t[:n])
        inputs.append(fed)
    y = check_labels(y[:n], desc) if y is not None else None

    def batches():
        for i in range(0, n, batch_size):
            yield tuple(t[i : i + batch_size] for t in inputs), (y[i : i + batch_size] if y is not None else None)

    return DataSource(desc, kind, True, -(-n // batch_size), n, y is not None, batches,
                      label_max=int(y.max()) if y is not None else None, dtype=spec.dtype,
                      preprocessing="; ".join(notes) if notes else preprocessing, notes=notes)


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
