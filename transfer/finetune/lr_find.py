"""The learning-rate range test (Smith 2015, popularised by fastai): train for a few hundred steps
while raising the LR exponentially from `start` to `end`, record the smoothed loss, stop once it
exceeds 4x its minimum. The suggestion is the LR where the loss falls fastest (steepest negative
slope of the smoothed loss against log LR), which is usually a safe, fast choice. The model's
weights are restored afterwards."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..report.figures import figure, png
from .loop import autocast, to_device
from .optim import create_optimizer


@dataclass
class LRFindResult:
    lrs: list[float]
    losses: list[float]  # smoothed
    suggestion: float
    min_loss_lr: float
    stopped_early: bool

    def to_dict(self) -> dict:
        return {
            "suggestion": self.suggestion,
            "min_loss_lr": self.min_loss_lr,
            "steps": len(self.lrs),
            "stopped_early": self.stopped_early,
            "lrs": self.lrs,
            "losses": self.losses,
        }


def lr_find(ft, start: float = 1e-6, end: float = 1.0, steps: int = 100, beta: float = 0.9) -> LRFindResult:
    """Run the range test on a `transfer.finetune.Finetuner`'s model and data."""
    cfg = replace(ft.cfg, mixup=0.0, cutmix=0.0)
    opt = create_optimizer(ft.model, cfg, lr=start)
    scales = [g.get("lr_scale", 1.0) for g in opt.param_groups]
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    data = ft.loop_data()
    factor = (end / start) ** (1 / max(1, steps - 1))
    lrs, losses = [], []
    avg, best, step, epoch = 0.0, math.inf, 0, 0
    stopped = False
    ft.set_train()
    while step < steps and not stopped:
        for x, y in data.train(epoch):
            lr = start * factor**step
            for g, s in zip(opt.param_groups, scales):
                g["lr"] = lr * s
            x, y = to_device(x, ft.device), y.to(ft.device)
            with autocast(ft.device, ft.amp):
                loss = criterion(ft.trainable(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            v = loss.item()
            avg = beta * avg + (1 - beta) * v
            smooth = avg / (1 - beta ** (step + 1))
            lrs.append(lr)
            losses.append(smooth)
            step += 1
            if not math.isfinite(smooth) or (step > 5 and smooth > 4 * best):
                stopped = True
                break
            best = min(best, smooth)
            if step >= steps:
                break
        epoch += 1
    ft.reset()
    ft.model.eval()
    return LRFindResult(
        lrs=lrs,
        losses=losses,
        suggestion=suggest(lrs, losses),
        min_loss_lr=float(lrs[int(np.nanargmin(losses))]) if losses else start,
        stopped_early=stopped,
    )


def suggest(lrs: list[float], losses: list[float]) -> float:
    """LR at the steepest descent of the smoothed loss (ignoring the noisy first and the exploded
    last points); min-loss LR / 10 when the curve is too short."""
    lr, loss = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    finite = np.isfinite(loss)
    lr, loss = lr[finite], loss[finite]
    if len(lr) < 8:
        return float(lr[int(np.argmin(loss))] / 10) if len(lr) else 1e-3
    lo = max(1, len(lr) // 10)
    stop = int(np.argmin(loss))  # only on the descending part
    if stop - lo < 4:
        return float(lr[int(np.argmin(loss))] / 10)
    w = max(3, len(lr) // 10)  # the range test is noisy: smooth again before differentiating
    seg = np.convolve(np.pad(loss[lo : stop + 1], (w // 2, w - 1 - w // 2), mode="edge"), np.ones(w) / w, mode="valid")
    grad = np.gradient(seg, np.log10(lr[lo : stop + 1]))
    return float(lr[lo + int(np.argmin(grad[:-1]))])


def plot_png(res: LRFindResult, title: str = "") -> bytes:
    fig = figure(6, 4)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(res.lrs, res.losses)
    ax.set_xscale("log")
    ax.axvline(res.suggestion, color="red", ls="--", label=f"suggestion {res.suggestion:.1e}")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss (smoothed)")
    ax.set_title(title or "LR range test", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    return png(fig, dpi=90)
