"""A layer-by-layer table of a CNN, CS231n style: for every layer K (filters), F (kernel), S (stride),
P (padding), the output volume W x H x D from the conv formula, and the parameter count from
(F*F*D/groups)*K + K. Each formula result is checked against a real forward pass (hooks) and the
parameter counts must add up to the model's real total."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

_POOL_TYPES = (nn.MaxPool2d, nn.AvgPool2d)
_ADAPTIVE = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


@dataclass
class LayerRow:
    name: str
    kind: str
    K: int | None = None
    F: str | None = None
    S: str | None = None
    P: str | None = None
    groups: int | None = None
    out: str | None = None  # 'W x H x D' from the formula (or measured, for layers without one)
    measured: str | None = None  # 'W x H x D' seen in the forward pass
    params: int = 0  # from the formula
    real_params: int = 0  # numel of the module's own parameters
    ok: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _same_pad(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def _conv_out(size: int, k: int, s: int, p: int, d: int = 1, ceil: bool = False) -> int:
    num = size + p - d * (k - 1) - 1  # p: total padding on both sides
    return (math.ceil(num / s) if ceil else num // s) + 1


def _vol(t: torch.Tensor) -> str | None:
    if not isinstance(t, torch.Tensor):
        return None
    if t.dim() == 4:
        return f"{t.shape[3]} x {t.shape[2]} x {t.shape[1]}"
    if t.dim() == 2:
        return f"1 x 1 x {t.shape[1]}"
    return " x ".join(str(s) for s in t.shape[1:])


def _conv_row(name: str, m: nn.Conv2d, x: torch.Tensor, y: torch.Tensor) -> LayerRow:
    (kh, kw), (sh, sw), (dh, dw) = _pair(m.kernel_size), _pair(m.stride), _pair(m.dilation)
    h, w, d_in = x.shape[2], x.shape[3], x.shape[1]
    if isinstance(m.padding, str) or type(m).__name__ == "Conv2dSame":
        # TF 'same': padding depends on the input size, possibly one more on the bottom/right.
        ph, pw = _same_pad(h, kh, sh, dh), _same_pad(w, kw, sw, dw)
        if m.padding == "valid":
            ph = pw = (0, 0)
    else:
        p = _pair(m.padding)
        ph, pw = (p[0], p[0]), (p[1], p[1])
    oh, ow = _conv_out(h, kh, sh, sum(ph), dh), _conv_out(w, kw, sw, sum(pw), dw)
    k = m.out_channels
    params = kh * kw * (d_in // m.groups) * k + (k if m.bias is not None else 0)
    fmt = lambda a, b: f"{a}" if a == b else f"{a}x{b}"  # noqa: E731
    side = lambda q: f"{q[0]}" if q[0] == q[1] else f"{q[0]}/{q[1]}"  # noqa: E731  before/after
    pad = side(ph) if ph == pw else f"{side(ph)}x{side(pw)}"
    kind = "conv" if m.groups == 1 else ("dwconv" if m.groups == d_in == k else "gconv")
    return LayerRow(
        name, kind, K=k, F=fmt(kh, kw), S=fmt(sh, sw), P=pad, groups=m.groups, out=f"{ow} x {oh} x {k}", params=params
    )


def _pool_row(name: str, m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> LayerRow:
    (kh, kw), (sh, sw) = _pair(m.kernel_size), _pair(m.stride or m.kernel_size)
    p = _pair(m.padding)
    ceil = bool(getattr(m, "ceil_mode", False))
    d = _pair(getattr(m, "dilation", 1))
    oh = _conv_out(x.shape[2], kh, sh, 2 * p[0], d[0], ceil)
    ow = _conv_out(x.shape[3], kw, sw, 2 * p[1], d[1], ceil)
    kind = "maxpool" if isinstance(m, nn.MaxPool2d) else "avgpool"
    return LayerRow(
        name, kind, F=f"{kh}" if kh == kw else f"{kh}x{kw}", S=str(sh), P=str(p[0]), out=f"{ow} x {oh} x {x.shape[1]}"
    )


def _other_row(name: str, m: nn.Module, x, y) -> LayerRow:
    own = sum(p.numel() for p in m.parameters(recurse=False))
    if isinstance(m, nn.Linear):
        return LayerRow(
            name,
            "fc",
            K=m.out_features,
            params=m.in_features * m.out_features + (m.out_features if m.bias is not None else 0),
        )
    if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)) or "Norm" in type(m).__name__:
        # affine norms: a scale and a shift per channel (BN's running stats are buffers, not parameters)
        return LayerRow(name, "norm", params=own)
    if isinstance(m, _ADAPTIVE) or "Pool" in type(m).__name__:
        return LayerRow(name, "globalpool", params=own)
    return LayerRow(name, type(m).__name__, params=own)


def layer_table(model: nn.Module, input_size: tuple[int, int] = (224, 224)) -> tuple[list[LayerRow], dict]:
    """Rows for every module that holds parameters of its own or pools, in forward order, and totals."""
    rows: list[LayerRow] = []
    handles = []

    def hook(name):
        def fn(m, inputs, output):
            x = inputs[0] if inputs else None
            if isinstance(m, nn.Conv2d):
                row = _conv_row(name, m, x, output)
            elif isinstance(m, _POOL_TYPES):
                row = _pool_row(name, m, x, output)
            else:
                row = _other_row(name, m, x, output)
            row.measured = _vol(output)
            if row.out is None:
                row.out = row.measured
            row.real_params = sum(p.numel() for p in m.parameters(recurse=False))
            row.ok = row.out == row.measured and (row.params == row.real_params or row.kind == "globalpool")
            rows.append(row)

        return fn

    for name, m in model.named_modules():
        has_own = any(True for _ in m.parameters(recurse=False))
        if has_own or isinstance(m, _POOL_TYPES + _ADAPTIVE):
            handles.append(m.register_forward_hook(hook(name or "(model)")))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, *input_size))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    # Modules with parameters that forward never called (rare) still count toward the total.
    called = {r.name for r in rows}
    for name, m in model.named_modules():
        if (name or "(model)") not in called and any(True for _ in m.parameters(recurse=False)):
            own = sum(p.numel() for p in m.parameters(recurse=False))
            rows.append(LayerRow(name, f"{type(m).__name__} (not called)", params=own, real_params=own))
    real_total = sum(p.numel() for p in model.parameters())
    formula_total = sum(r.params for r in rows)
    totals = {
        "layers": len(rows),
        "conv_layers": sum(r.kind in ("conv", "dwconv", "gconv") for r in rows),
        "params_formula": formula_total,
        "params_real": real_total,
        "params_match": formula_total == real_total,
        "shapes_match": all(r.out == r.measured for r in rows),
        "mismatches": [r.name for r in rows if not r.ok],
    }
    return rows, totals
