"""`DataSource`: batches of (inputs, labels) with what they are, the one shape every data reader returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator


@dataclass
class DataSource:
    description: str
    kind: str  # demo | random | folder | tensor
    representative: bool
    n_batches: int
    samples: int
    has_labels: bool
    _batches: Callable[[], Iterator[tuple]]
    label_max: int | None = None  # the largest class id among the labels used; None unless they are class ids
    dtype: str | None = None  # dtype of the input tensors fed to the model, e.g. "float32", "int64"
    preprocessing: str = "none"  # what was done to the stored data before it reached the model
    skipped: list[str] = field(default_factory=list)  # items left out, each "path: reason"
    notes: list[str] = field(default_factory=list)  # what a report should say about this data
    # Labels of any task are data (pitch in Hz, pair ids, boxes): whether they are class ids (one integer
    # 0..C-1 per sample, what top-1 accuracy needs), and if not, what they are instead.
    class_ids: bool = False
    labels_are: str = ""

    def __iter__(self) -> Iterator[tuple[tuple, object]]:
        for inputs, y in self._batches():
            yield (tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)), y

    def __len__(self) -> int:
        return self.n_batches
