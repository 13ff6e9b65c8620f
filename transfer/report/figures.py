"""Every figure of a run, as PNG bytes: confusion.png, curves.png, misclassified.png (and the LR
finder's plot, through the same helpers). matplotlib's object API on no display: a `Figure` saves
to PNG through the Agg renderer without pyplot or a backend switch; matplotlib is imported only
when a figure is drawn. The confusion matrix (written by every run, probes included) is drawn
with PIL, so a probe run never imports matplotlib."""

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


_BLUES = (np.array([247, 251, 255]), np.array([8, 48, 107]))  # matplotlib's "Blues" at 0 and 1


def _blue(v: float) -> tuple[int, int, int]:
    lo, hi = _BLUES
    return tuple(int(c) for c in np.round(lo + (hi - lo) * min(1.0, max(0.0, v))))


def confusion_png(cm, labels: list[str], title: str = "confusion matrix (val)") -> bytes:
    """Row-normalised confusion matrix (colour: the fraction of the true class; numbers: counts).
    Drawn with PIL, not matplotlib: every probe run writes one, and importing matplotlib alone
    took longer (~0.7 s here) than the rest of writing the run directory."""
    from PIL import Image, ImageDraw, ImageFont

    cm = np.asarray(cm)
    n = len(labels)
    cell = int(min(64, max(14, 640 // max(n, 1))))
    font = ImageFont.load_default(size=max(9, min(14, cell // 3)))
    small = ImageFont.load_default(size=11)
    draw0 = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def width(text, f):
        box = draw0.textbbox((0, 0), text, font=f)
        return box[2] - box[0], box[3] - box[1]

    label_w = max(width(str(lab), font)[0] for lab in labels) + 8
    pad, title_h, bar_w = 16, 28, 14
    left = pad + 16 + label_w  # room for the "true" axis name and the row labels
    top = pad + title_h
    grid = cell * n
    W = left + grid + pad + bar_w + 40
    H = top + grid + label_w + 24 + pad
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    d.text((left + grid / 2, pad), title, fill="black", font=small, anchor="mt")
    rows = cm.sum(axis=1, keepdims=True).clip(min=1)
    for i in range(n):
        for j in range(n):
            v = float(cm[i, j] / rows[i, 0])
            x0, y0 = left + j * cell, top + i * cell
            d.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=_blue(v))
            if n <= 30:
                d.text(
                    (x0 + cell / 2, y0 + cell / 2),
                    str(int(cm[i, j])),
                    font=font,
                    anchor="mm",
                    fill="white" if v > 0.5 else "black",
                )
    for i, lab in enumerate(labels):  # row labels (true) on the left, column labels (predicted) below, vertical
        d.text((left - 4, top + i * cell + cell / 2), str(lab), font=font, fill="black", anchor="rm")
        w, h = width(str(lab), font)
        tile = Image.new("RGB", (w + 2, h + 6), "white")
        ImageDraw.Draw(tile).text((1, 1), str(lab), font=font, fill="black")
        tile = tile.rotate(90, expand=True)
        img.paste(tile, (int(left + i * cell + cell / 2 - tile.width / 2), top + grid + 4))
    d.text((left + grid / 2, top + grid + label_w + 10), "predicted", font=small, fill="black", anchor="mt")
    tile = Image.new("RGB", (width("true", small)[0] + 2, 16), "white")
    ImageDraw.Draw(tile).text((1, 1), "true", font=small, fill="black")
    tile = tile.rotate(90, expand=True)
    img.paste(tile, (pad, int(top + grid / 2 - tile.height / 2)))
    bx = left + grid + pad  # colour bar: fraction of the true class, 0 at the bottom
    for y in range(grid):
        d.line([bx, top + y, bx + bar_w, top + y], fill=_blue(1 - y / max(1, grid - 1)))
    d.rectangle([bx, top, bx + bar_w, top + grid - 1], outline="black")
    d.text((bx + bar_w + 3, top), "1", font=small, fill="black", anchor="lt")
    d.text((bx + bar_w + 3, top + grid), "0", font=small, fill="black", anchor="lb")
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


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
