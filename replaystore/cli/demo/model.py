"""The demo's classifier: small enough to train in seconds, its penultimate layer feeds exemplar selection."""

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
    return pixels.flatten(1).float() / 16.0


class PixelFeatures(nn.Module):
    """Raw uint8-valued pixels → the MLP's features: what the distill flow runs on candidates."""

    def __init__(self, mlp: MLP) -> None:
        super().__init__()
        self.mlp = mlp

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.mlp.features(to_input(pixels))


def export_features(mlp: MLP, path: str) -> str:
    """Save the feature extractor with `torch.export`, the format the distill flow loads."""
    example = torch.zeros(4, 8, 8)
    program = torch.export.export(PixelFeatures(mlp).eval(), (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, path)
    return path
