"""Freeze TF 'same' padding for a fixed input size.

TF-ported models (tf_efficientnet_lite*) use timm's `Conv2dSame`, which computes its padding from
the input's height and width on every call. Traced into ONNX, that is a chain of Shape / Gather /
Ceil / Pad ops per conv, and the padding it yields is only right for the size being run: at
224 x 224 a stride-2 3x3 conv pads (0, 1), at 225 x 225 it pads (1, 1). Because the exported graph
has a fixed H and W anyway, we compute each conv's padding once at that size and replace the
module with a plain `nn.Conv2d` (symmetric padding) or `ZeroPad2d` + `nn.Conv2d` (asymmetric, which
onnxruntime fuses into the Conv). The graph gets smaller, faster and quantizes cleanly; the parity
gate against the original module proves the replacement exact.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from timm.layers.conv2d_same import Conv2dSame
from timm.layers.padding import pad_same_arg


def _static_conv(mod: Conv2dSame, hw: tuple[int, int]) -> nn.Module:
    left, right, top, bottom = pad_same_arg(list(hw), list(mod.weight.shape[-2:]), list(mod.stride), list(mod.dilation))
    symmetric = left == right and top == bottom
    conv = nn.Conv2d(
        mod.in_channels,
        mod.out_channels,
        mod.kernel_size,
        mod.stride,
        (top, left) if symmetric else 0,
        mod.dilation,
        mod.groups,
        mod.bias is not None,
    )
    conv.weight = mod.weight
    conv.bias = mod.bias
    return conv if symmetric else nn.Sequential(nn.ZeroPad2d((left, right, top, bottom)), conv)


def freeze_same_padding(model: nn.Module, input_size: tuple[int, int, int]) -> tuple[nn.Module, int]:
    """A copy of `model` whose size-dependent 'same' convs are static at C x H x W; and how many were replaced."""
    targets = [name for name, m in model.named_modules() if isinstance(m, Conv2dSame)]
    if not targets:
        return model, 0
    model = copy.deepcopy(model)
    seen: dict[str, tuple[int, int]] = {}
    hooks = [
        model.get_submodule(n).register_forward_pre_hook(
            lambda m, args, n=n: seen.__setitem__(n, tuple(args[0].shape[-2:]))
        )
        for n in targets
    ]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_size))
    finally:
        for h in hooks:
            h.remove()
    for name in targets:
        if name not in seen:  # a conv forward never reaches at this size: leave it dynamic
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, _static_conv(model.get_submodule(name), seen[name]))
    return model, len(seen)
