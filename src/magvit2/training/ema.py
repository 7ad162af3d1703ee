"""Exponential moving average of a model's weights (the generator's EMA copy)."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """Keeps ``shadow = decay * shadow + (1 - decay) * param`` for every floating tensor of a model.

    Buffers that are not floating point (counters, masks) are copied as they are. ``state_dict``
    gives a normal model state dict, so the EMA weights save and load like the model's.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the shadow weights towards ``model``'s current weights."""
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if s.is_floating_point():
                s.lerp_(v.detach().to(s.dtype), 1.0 - self.decay)
            else:
                s.copy_(v)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The EMA weights as a state dict of the model."""
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore EMA weights saved with :meth:`state_dict` (keys must match)."""
        missing = set(self.shadow) - set(state)
        if missing:
            raise ValueError(f"EMA state is missing keys: {sorted(missing)[:5]}")
        for k in self.shadow:
            self.shadow[k].copy_(state[k])

    def copy_to(self, model: nn.Module) -> None:
        """Load the EMA weights into ``model``."""
        model.load_state_dict(self.shadow)
