"""curves.png: loss and accuracy per epoch, train and val (matplotlib, Agg backend, no display)."""
from __future__ import annotations

import io

from transferzoo.zoo.fileio import atomic_write


def curves_png(history: list[dict], title: str = "") -> bytes:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    ep = [h["epoch"] for h in history]
    fig = Figure(figsize=(10, 3.8))
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
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def write_curves(path, history: list[dict], title: str = "") -> None:
    atomic_write(path, curves_png(history, title))
