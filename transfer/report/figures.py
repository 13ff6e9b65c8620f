"""Every figure of a run, as PNG bytes: confusion.png, curves.png, misclassified.png (and the LR
finder's plot, through the same helpers). matplotlib's object API on no display: a `Figure` saves
to PNG through the Agg renderer without pyplot or a backend switch; matplotlib is imported only
when a figure is drawn."""

from __future__ import annotations

import io

import numpy as np

from transferzoo import zoo
from transferzoo.zoo.fileio import atomic_write


def figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def png(fig, dpi: int = 90) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def confusion_png(cm, labels: list[str], title: str = "confusion matrix (val)") -> bytes:
    cm = np.asarray(cm)
    n = len(labels)
    size = min(16.0, max(4.0, 0.45 * n + 2.5))
    fig = figure(size, size * 0.85)
    ax = fig.add_subplot(1, 1, 1)
    rows = cm.sum(axis=1, keepdims=True).clip(min=1)
    im = ax.imshow(cm / rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(labels, rotation=45 if n > 3 else 0, ha="right" if n > 3 else "center", fontsize=8)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    str(int(cm[i, j])),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if cm[i, j] / rows[i, 0] > 0.5 else "black",
                )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    return png(fig, dpi=100)


def curves_png(history: list[dict], title: str = "") -> bytes:
    ep = [h["epoch"] for h in history]
    fig = figure(10, 3.8)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for ax, key, name in ((ax1, "loss", "loss"), (ax2, "accuracy", "accuracy")):
        ax.plot(ep, [h[f"train_{key}"] for h in history], "o-", label="train")
        ax.plot(ep, [h[f"val_{key}"] for h in history], "s-", label="val")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    ax1.set_title("loss (train: with label smoothing / mixup)", fontsize=9)
    ax2.set_title("accuracy", fontsize=9)
    if title:
        fig.suptitle(title)
    return png(fig, dpi=90)


def write_curves(path, history: list[dict], title: str = "") -> None:
    atomic_write(path, curves_png(history, title))


def misclassified_png(items: list[dict], labels: list[str], cols: int = 4) -> bytes | None:
    if not items:
        return None
    rows = -(-len(items) // cols)
    fig = figure(cols * 2.6, rows * 2.9)
    for j, it in enumerate(items):
        ax = fig.add_subplot(rows, cols, j + 1)
        try:
            img = zoo.load_rgb(it["path"])
            img.thumbnail((256, 256))
            ax.imshow(np.asarray(img))
        except Exception:  # noqa: BLE001 - a file removed since training: show the text only
            pass
        ax.set_title(f"true {labels[it['true']]}\npred {labels[it['pred']]} ({it['confidence']:.2f})", fontsize=8)
        ax.axis("off")
    return png(fig, dpi=80)
