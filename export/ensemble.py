"""Several trained models as one: the mean of their softmax probabilities."""

from __future__ import annotations

import torch
import torch.nn as nn


class ProbabilityEnsemble(nn.Module):
    def __init__(self, members: list[nn.Module]):
        super().__init__()
        assert len(members) >= 2, "an ensemble needs at least two members"
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = [m(x).softmax(dim=-1) for m in self.members]
        return torch.stack(probs, dim=0).mean(dim=0)
