"""The model's input: one or more shapes and a dtype, parsed from `1,3,224,224` (`;` between inputs)."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError

DTYPES = ("float32", "float16", "float64", "int64", "int32")


@dataclass(frozen=True)
class InputSpec:
    shapes: tuple[tuple[int, ...], ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if not self.shapes:
            raise UsageError("an input spec needs at least one shape")
        for shape in self.shapes:
            if not shape or any((not isinstance(d, int)) or d <= 0 for d in shape):
                raise UsageError(f"input shape {shape!r} must be positive integers, e.g. 1,3,224,224")
        if self.dtype not in DTYPES:
            raise UsageError(f"input dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")

    @classmethod
    def parse(cls, text: str, dtype: str = "float32") -> "InputSpec":
        if not isinstance(text, str):
            raise UsageError(f"input shape must be text such as 1,3,224,224 (';' between inputs), got {text!r}")
        shapes = []
        for part in text.replace(" ", "").split(";"):
            dims = part.replace("x", ",").split(",")
            if not all(d.isdigit() for d in dims):  # "1,x" or "1,,3" is no shape, not a shorter one
                raise UsageError(f"cannot read input shape {text!r}: expected numbers like 1,3,224,224 "
                                 "(';' between the inputs of a model with several)")
            shapes.append(tuple(int(d) for d in dims))
        return cls(tuple(shapes), dtype)

    @classmethod
    def from_json(cls, value) -> "InputSpec":
        if isinstance(value, str):
            return cls.parse(value)
        shapes = value["shapes"]
        return cls(tuple(tuple(int(d) for d in s) for s in shapes), value.get("dtype", "float32"))

    def to_json(self) -> dict:
        return {"shapes": [list(s) for s in self.shapes], "dtype": self.dtype}

    def __str__(self) -> str:
        return "; ".join("x".join(str(d) for d in s) for s in self.shapes) + ("" if self.dtype == "float32" else f" {self.dtype}")

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample of the first input (without the batch dimension)."""
        return self.shapes[0][1:]

    @property
    def sample_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Shape of one sample of each input (without the batch dimension)."""
        return tuple(s[1:] for s in self.shapes)

    @property
    def is_float(self) -> bool:
        return self.dtype.startswith("float")

    def example(self, batch: int | None = None, seed: int = 0, id_range: int | None = None):
        """Deterministic example tensors, one per input (batch size overridden when given); integer
        inputs are ids in [0, id_range), or zeros when no range is known."""
        import torch

        gen = torch.Generator().manual_seed(seed)
        dtype = getattr(torch, self.dtype)
        out = []
        for shape in self.shapes:
            shape = (batch, *shape[1:]) if batch is not None else shape
            if dtype.is_floating_point:
                out.append(torch.randn(shape, generator=gen).to(dtype))
            elif id_range:
                out.append(torch.randint(0, id_range, shape, generator=gen, dtype=dtype))
            else:
                out.append(torch.zeros(shape, dtype=dtype))
        return tuple(out)
