"""The epoch loop shared by `partial` and `full`: train, validate, log, check, checkpoint.

Per epoch it appends one record to the history (metrics.jsonl): train loss / accuracy, val loss /
accuracy, learning rate, seconds. Checks, with messages a user can act on:
- initial loss vs ln(C): the first batch's loss, before any update, should be about ln(C) (a new
  head predicts uniformly); far off means a wrong head init, a label bug or a broken input pipeline;
- divergence: a loss that becomes NaN/inf, or whose running mean exceeds `divergence_factor` x the
  initial loss, stops the run (`TrainingDiverged`) and says to lower the learning rate;
- early stopping on validation accuracy (`patience`), keeping the best epoch's weights.
Checkpoints (`transfer.checkpoint`) make an interrupted run resumable with identical results.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from transferzoo.transfer.config import FinetuneConfig
from transferzoo.zoo.errors import ZooError

from . import checkpoint as ckpt


class TrainingDiverged(ZooError):
    pass


# Training and validation run channels-last (NHWC) on every device, not only CUDA: on the CPU,
# oneDNN's NHWC kernels make a whole-model training step 0.59x as long for efficientnet_lite0 and
# 0.68-0.74x for the other depthwise nets, 0.9-1.02x elsewhere (bench/bench_memory_format.py).
MEMORY_FORMAT = torch.channels_last


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch on `device`, image batches (and cached feature maps) in MEMORY_FORMAT."""
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=MEMORY_FORMAT) if x.dim() == 4 else x


@dataclass
class LoopData:
    train: Callable[[int], Iterable]  # epoch -> batches (x, y), deterministic for (seed, epoch)
    val: Callable[[], Iterable]  # batches in val-sample order
    steps_per_epoch: int


@dataclass
class LoopResult:
    history: list[dict]
    best_epoch: int
    best_val_accuracy: float
    initial_loss: float | None
    stopped: str  # 'completed' | 'early_stopping'
    checks: dict = field(default_factory=dict)


def autocast(device: torch.device, amp: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)


@torch.no_grad()
def evaluate(module: nn.Module, batches: Iterable, device: torch.device, amp: bool = False, with_probs: bool = False):
    """(mean loss, accuracy, predictions, labels[, probabilities]) over `batches`, in order."""
    was = module.training
    module.eval()
    losses, preds, labels, probs = [], [], [], []
    for x, y in batches:
        x, y = to_device(x, device), y.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = module(x)
        logits = logits.float()
        losses.append(F.cross_entropy(logits, y, reduction="sum").item())
        preds.append(logits.argmax(1).cpu())
        labels.append(y.cpu())
        if with_probs:
            probs.append(logits.softmax(1).cpu())
    module.train(was)
    p, t = torch.cat(preds).numpy(), torch.cat(labels).numpy()
    n = max(1, len(t))
    out = (sum(losses) / n, float((p == t).mean()) if len(t) else 0.0, p, t)
    return out + (torch.cat(probs).numpy(),) if with_probs else out


def _criterion(cfg: FinetuneConfig, mixup) -> nn.Module:
    if mixup is not None:
        from timm.loss import SoftTargetCrossEntropy

        return SoftTargetCrossEntropy()  # Mixup already smooths the targets
    return nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)


def make_mixup(cfg: FinetuneConfig, num_classes: int):
    if not cfg.uses_mixup:
        return None
    from timm.data import Mixup

    return Mixup(
        mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.label_smoothing, num_classes=num_classes
    )


def _lr(optimizer) -> float:
    return max(g["lr"] for g in optimizer.param_groups)


def run(
    *,
    module: nn.Module,  # what is trained (maybe DDP-wrapped); called on the batches' x
    set_train: Callable[[], None],  # put it in train mode (frozen norms stay in eval)
    state_module: nn.Module,  # whose state_dict is checkpointed / kept as the best
    optimizer,
    scheduler,
    data: LoopData,
    cfg: FinetuneConfig,  # resolved (FinetuneConfig.resolved)
    num_classes: int,
    device: torch.device,
    amp: bool = False,
    ckpt_dir=None,
    resume: dict | None = None,
    fingerprint: str = "",
    on_epoch: Callable[[list[dict]], None] | None = None,
    is_main: bool = True,
    all_reduce: Callable[[list[float]], list[float]] | None = None,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
    epochs: int | None = None,
    check_initial: bool = True,
    extra_state: dict | None = None,
    progress: bool | None = None,  # None: only when stderr is a TTY
) -> LoopResult:
    from tqdm import tqdm

    epochs = cfg.epochs if epochs is None else epochs
    mixup = make_mixup(cfg, num_classes)
    criterion = _criterion(cfg, mixup)
    history: list[dict] = []
    best = {"score": (-1.0, -math.inf), "epoch": -1, "state": None}
    initial_loss = None
    checks: dict = {}
    start_epoch, step = 0, 0
    if resume is not None:
        state_module.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        # The schedule is not restored from the checkpoint: it is a function of the step for this run's
        # length, so a resume with another --epochs follows the schedule of the new length (restoring the
        # old one ran an added 4th epoch of 3 at the minimum LR). For the same length the LR is the same.
        scheduler.step_update(num_updates=int(resume["step"]))
        was = int(resume.get("epochs") or epochs)
        if was != epochs:
            log(f"resuming with {epochs} epochs (the run was started with {was}): the schedule is rebuilt for {epochs}")
        history = list(resume["history"])
        best = {"score": tuple(resume["best_score"]), "epoch": int(resume["best_epoch"]), "state": resume["best_state"]}
        initial_loss = resume["initial_loss"]
        checks = dict(resume.get("checks") or {})
        start_epoch, step = int(resume["epoch"]) + 1, int(resume["step"])
        ckpt.set_rng_state(resume["rng"])
        log(f"resumed after epoch {start_epoch} of {epochs}")
    ln_c = math.log(num_classes)
    epoch_seconds: list[float] = []  # epochs run in this process (a resumed run's earlier ones are not timed)
    recent: deque = deque(maxlen=10)
    stopped = "completed"
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        set_train()
        tot_loss = tot_correct = tot_n = 0.0
        bar = tqdm(
            total=data.steps_per_epoch,
            desc=f"epoch {epoch + 1}/{epochs}",
            unit="batch",
            disable=not ((sys.stderr.isatty() if progress is None else progress) and is_main),
            leave=False,
        )
        for k, (x, y) in enumerate(data.train(epoch)):
            x, y = to_device(x, device), y.to(device, non_blocking=True)
            target = y
            if mixup is not None and len(x) % 2 == 0:
                x, target = mixup(x, y)
            elif mixup is not None:  # timm's Mixup needs an even batch: one-hot the odd last batch
                from timm.data.mixup import mixup_target

                target = mixup_target(y, num_classes, lam=1.0, smoothing=cfg.label_smoothing)
            with autocast(device, amp):
                logits = module(x)
            loss = criterion(logits.float(), target)
            lv = loss.item()
            if initial_loss is None:
                initial_loss = lv
                checks["initial_loss"] = round(lv, 4)
                checks["ln_num_classes"] = round(ln_c, 4)
                ok = abs(lv - ln_c) <= max(0.5 * ln_c, 0.5)
                checks["initial_loss_ok"] = ok
                if check_initial and is_main and not ok:
                    log(
                        f"warning: initial loss {lv:.3f} is far from ln({num_classes}) = {ln_c:.3f}: "
                        "a new head should start near uniform predictions; check labels and preprocessing"
                    )
            if not math.isfinite(lv):
                raise TrainingDiverged(
                    f"training diverged at epoch {epoch + 1}, step {step + 1}: the loss is {lv}. "
                    f"Lower the learning rate (it was {cfg.lr:g}; try `transferzoo lr-find`) or add --grad-clip"
                )
            recent.append(lv)
            if len(recent) >= min(5, data.steps_per_epoch) and np.mean(recent) > cfg.divergence_factor * initial_loss:
                raise TrainingDiverged(
                    f"training diverged at epoch {epoch + 1}, step {step + 1}: the running loss {np.mean(recent):.3f} "
                    f"exceeds {cfg.divergence_factor:g} x the initial loss {initial_loss:.3f}. Lower the learning rate "
                    f"(it was {cfg.lr:g}; `transferzoo lr-find DATA` suggests one)"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.grad_clip)
            optimizer.step()
            step += 1
            scheduler.step_update(num_updates=step)
            n = len(y)
            tot_loss += lv * n
            tot_correct += (logits.detach().argmax(1) == y).sum().item()
            tot_n += n
            left = run_seconds_left(
                time.perf_counter() - t0, k + 1, data.steps_per_epoch, epochs - epoch - 1, epoch_seconds
            )
            bar.set_postfix(
                loss=f"{tot_loss / tot_n:.3f}", acc=f"{tot_correct / tot_n:.3f}", run_left=fmt_seconds(left)
            )
            bar.update(1)
        bar.close()
        if all_reduce is not None:
            tot_loss, tot_correct, tot_n = all_reduce([tot_loss, tot_correct, tot_n])
        val_loss, val_acc, _, _ = evaluate(module, data.val(), device, amp)
        rec = {
            "epoch": epoch + 1,
            "train_loss": round(tot_loss / max(tot_n, 1), 6),
            "train_accuracy": round(tot_correct / max(tot_n, 1), 6),
            "val_loss": round(val_loss, 6),
            "val_accuracy": round(val_acc, 6),
            "lr": _lr(optimizer),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        history.append(rec)
        epoch_seconds.append(rec["seconds"])
        if is_main:
            left = sum(epoch_seconds) / len(epoch_seconds) * (epochs - epoch - 1)
            log(
                f"epoch {epoch + 1}/{epochs}: train loss {rec['train_loss']:.4f} acc {rec['train_accuracy']:.4f} | "
                f"val loss {val_loss:.4f} acc {val_acc:.4f} | lr {rec['lr']:.2e} | {rec['seconds']:.1f}s"
                + (f" | about {fmt_seconds(left)} left" if epoch + 1 < epochs else "")
            )
        score = (val_acc, -val_loss)
        if score > tuple(best["score"]):
            best = {
                "score": score,
                "epoch": epoch + 1,
                "state": {k: v.detach().cpu().clone() for k, v in state_module.state_dict().items()},
            }
        if ckpt_dir is not None and is_main and cfg.checkpoint:
            ckpt.save(
                ckpt_dir,
                {
                    "fingerprint": fingerprint,
                    "epoch": epoch,
                    "epochs": epochs,
                    "step": step,
                    "model": state_module.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": ckpt.rng_state(),
                    "history": history,
                    "best_score": list(best["score"]),
                    "best_epoch": best["epoch"],
                    "best_state": best["state"],
                    "initial_loss": initial_loss,
                    "checks": checks,
                    "extra": extra_state or {},
                },
            )
        if on_epoch is not None and is_main:
            on_epoch(history)
        if cfg.patience and epoch + 1 - best["epoch"] >= cfg.patience and epoch + 1 < epochs:
            stopped = "early_stopping"
            if is_main:
                log(f"early stopping: no val improvement for {cfg.patience} epoch(s); best was epoch {best['epoch']}")
            break
    if best["state"] is not None:
        state_module.load_state_dict(best["state"])
    return LoopResult(
        history=history,
        best_epoch=best["epoch"],
        best_val_accuracy=float(best["score"][0]),
        initial_loss=initial_loss,
        stopped=stopped,
        checks=checks,
    )


def run_seconds_left(
    epoch_elapsed: float, steps_done: int, steps_per_epoch: int, epochs_after: int, epoch_seconds: list[float]
) -> float:
    """Seconds until the last epoch ends: the rest of this epoch at its own pace so far, then each
    remaining epoch at the mean measured epoch (evaluation included) or, before one has finished,
    at this epoch's pace per step."""
    per_step = epoch_elapsed / max(1, steps_done)
    this_epoch = per_step * max(0, steps_per_epoch - steps_done)
    per_epoch = sum(epoch_seconds) / len(epoch_seconds) if epoch_seconds else per_step * steps_per_epoch
    return this_epoch + per_epoch * max(0, epochs_after)


def fmt_seconds(s: float) -> str:
    """1h02m, 4m05s, 12s: an ETA as a person reads it."""
    s = max(0, int(round(s)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def write_jsonl(path, history: list[dict]) -> None:
    from transferzoo.zoo.fileio import atomic_write

    atomic_write(path, "".join(json.dumps(r) + "\n" for r in history))
