"""nn.Sequential(Conv2d, BatchNorm2d, ReLU(inplace=True)) in training mode, with a forward
parameter named `input` (fx renames it `input_1`) and submodules named "0", "1", "2"."""

import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.features(input)


def get_inputs():
    return [torch.randn(2, 3, 16, 16)]


def get_init_inputs():
    return [3, 8]
