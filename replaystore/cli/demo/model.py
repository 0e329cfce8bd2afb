"""The demo's classifier: small enough to train in seconds, its penultimate layer feeds herding."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, hidden: int = 128, classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def to_input(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 digits (0–16) → float inputs in [0, 1]."""
    return pixels.reshape(len(pixels), -1).float() / 16.0
