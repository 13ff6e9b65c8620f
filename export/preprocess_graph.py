"""`--with-preprocessing`: the graph takes uint8 RGB pixels (N x H x W x 3, already resized and
cropped to the model's size) and does the cast, /255, mean/std normalisation and NHWC -> NCHW
itself, so a client sends pixels, not floats. Resizing stays outside the graph (it depends on each
image's size); the metadata says how (interpolation, crop_pct)."""

from __future__ import annotations

import torch
import torch.nn as nn

from transferzoo.zoo.model_info import Preprocessing


class WithPreprocessing(nn.Module):
    def __init__(self, model: nn.Module, pre: Preprocessing):
        super().__init__()
        self.model = model
        mean = torch.tensor(pre.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(pre.std, dtype=torch.float32).view(1, 3, 1, 1)
        # (x / 255 - mean) / std as one multiply-add: x * scale + shift
        self.register_buffer("scale", 1.0 / (255.0 * std), persistent=False)
        self.register_buffer("shift", -mean / std, persistent=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2).to(torch.float32)
        return self.model(x * self.scale + self.shift)
