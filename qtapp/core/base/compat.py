"""What the legacy torch.ao.quantization and TorchScript calls need around them: narrow warning filters,
and (`forgetting_ao_models`) the release of the models torch.ao's FX passes would keep.

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


@contextlib.contextmanager
def forgetting_ao_models() -> Iterator[None]:
    """Around prepare_fx / prepare_qat_fx / convert_fx: torch (since pytorch PR 162550, 2025) memoises FX's
    device lookup, `torch.ao.quantization.fx.utils.assert_and_get_unique_device`, with an unbounded
    functools.cache keyed on the module itself, and convert_fx looks up every submodule it converts. Each
    model those passes see (and its weights and observers) then lives as long as the process: about 55 MB
    per conversion of resnet18, 6.2 GB after a sensitivity run (60 conversions) and a tune. The memo only
    pays within one call (prepare and convert ask for the same model's device many times), so it is
    emptied when the call ends."""
    try:
        yield
    finally:
        _forget_ao_devices()


def _forget_ao_devices() -> None:
    try:  # torch is imported where it is used (start-up time)
        from torch.ao.quantization.fx.utils import assert_and_get_unique_device
    except ImportError:  # a torch without FX quantization keeps nothing
        return
    clear = getattr(assert_and_get_unique_device, "cache_clear", None)  # an older torch: no memo
    if clear is not None:
        clear()
