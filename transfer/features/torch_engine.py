"""The feature engines that run the frozen backbone in PyTorch (eager on the CPU, bf16 on CUDA) and
the feature module they and the ONNX export share; imported only when a backbone is built (a run
whose features and checked ONNX model are cached never imports torch).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn

from transferzoo import zoo
from transferzoo.transfer.threads import torch_threads


class FeatureModule(nn.Module):
    """Pooled stage outputs + pooled pre-logits features of a timm model, in one pass."""

    def __init__(self, model: nn.Module, stage_modules: list[str]):
        super().__init__()
        self.model = model
        self.stage_modules = list(stage_modules)
        self._taps = [model.get_submodule(n) for n in self.stage_modules]

    def forward(self, x: torch.Tensor):
        outs: list[torch.Tensor] = []
        hooks = [m.register_forward_hook(lambda _m, _i, o: outs.append(o.mean(dim=(2, 3)))) for m in self._taps]
        try:
            f = self.model.forward_features(x)
        finally:
            for h in hooks:
                h.remove()
        assert len(outs) == len(self._taps)
        return (*outs, self.model.forward_head(f, pre_logits=True))


def build_feature_module(model_name: str, weights=None) -> tuple[FeatureModule, tuple[np.ndarray, np.ndarray] | None]:
    """(frozen feature module in eval mode, the pretrained classifier's (W, b) or None)."""
    model = zoo.create(model_name, pretrained=True, weights=weights).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    clf = None
    head = model.get_classifier()
    if isinstance(head, nn.Linear) and head.out_features > 0:
        clf = (head.weight.detach().numpy().copy(), head.bias.detach().numpy().copy())
    stage_modules = [s.module for s in zoo.info(model_name).stages]
    return FeatureModule(model, stage_modules).eval(), clf


class TorchEngine:
    name = "torch"

    def __init__(self, module: FeatureModule, threads: int):
        self.module, self.threads = module, threads

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        with torch_threads(self.threads), torch.inference_mode():
            return [o.numpy() for o in self.module(torch.from_numpy(x))]


class TorchCudaEngine:
    """Eager PyTorch on CUDA: bf16 autocast, channels-last (what tensor cores want)."""

    name = "torch-cuda-bf16"

    def __init__(self, module: FeatureModule):
        self.dev = torch.device("cuda")
        # a copy: the CPU engine it is checked against keeps the original on the CPU
        self.module = copy.deepcopy(module).to(self.dev).to(memory_format=torch.channels_last).eval()

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            t = torch.from_numpy(x).pin_memory().to(self.dev, non_blocking=True)
            outs = self.module(t.contiguous(memory_format=torch.channels_last))
        return [o.float().cpu().numpy() for o in outs]
