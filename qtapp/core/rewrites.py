"""Float stand-ins for modules torch.ao converts to int8 whatever their setting (backends.float_rewrite)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class FloatPReLU(torch.nn.Module):
    """PReLU, kept float: the same function under a type torch.ao has no int8 pattern for."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.prelu(x, self.weight)
