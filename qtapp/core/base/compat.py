"""Narrow warning filters around the legacy torch.ao.quantization and TorchScript calls.

torch 2.10+ marks torch.ao.quantization deprecated (moved to torchao) and its quantized-tensor code
warns on every call. Those notices are noise for a user of this app, so they are filtered here,
around our calls only, never globally: any other warning still reaches the user.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

_QUIET = (
    (DeprecationWarning, r".*torch\.ao\.quantization.*"),
    (DeprecationWarning, r".*(deprecated|torchao).*"),
    (FutureWarning, r".*torch\.ao\.quantization.*"),
    (UserWarning, r".*(reduce_range|quantized tensor|_aminmax|TypedStorage|must run observer).*"),
    (UserWarning, r".*Please use quant_min and quant_max.*"),
    # TorchScript and the lite interpreter are what phones load today; torch marks them deprecated
    # in favour of torch.export/ExecuTorch. The report says so once instead of every call warning.
    (FutureWarning, r".*torch\.jit\..*deprecated.*"),
    (FutureWarning, r".*Lite Interpreter is deprecated.*"),
    (UserWarning, r".*TorchScript type system doesn't support instance-level annotations.*"),
)


@contextlib.contextmanager
def quiet_ao() -> Iterator[None]:
    with warnings.catch_warnings():
        for category, pattern in _QUIET:
            warnings.filterwarnings("ignore", message=pattern, category=category)
        yield
