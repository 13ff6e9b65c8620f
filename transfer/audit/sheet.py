"""The contact sheet: one PNG of the flagged images, one section per finding, a person scans it in seconds.

Each tile: the thumbnail, the file name, its split and given label, the suggested label (label
errors) or the class it is nearest to (outliers), and the score. Duplicate pairs are drawn side by
side. Drawn with PIL (no matplotlib figure per tile: 100 tiles take well under a second).
"""

from __future__ import annotations

import io
import os

from PIL import Image, ImageDraw, ImageFont

from transferzoo import zoo

TILE = 150  # thumbnail box, pixels
TEXT_H = 52
COLS = 8
PER_SECTION = 24  # tiles per section (pairs count twice)


def _font():
    return ImageFont.load_default()


def _thumb(path: str) -> Image.Image:
    try:
        img = zoo.load_rgb(path)
        img.thumbnail((TILE, TILE))
        return img
    except (zoo.ImageError, OSError):
        im = Image.new("RGB", (TILE, TILE), (200, 200, 200))
        ImageDraw.Draw(im).text((8, TILE // 2), "cannot read", fill=(0, 0, 0), font=_font())
        return im


def _short(text: str, n: int = 24) -> str:
    return text if len(text) <= n else "..." + text[-(n - 3) :]


def sections(result: dict) -> list[tuple[str, list[tuple[str, list[str], tuple[int, int, int]]]]]:
    """[(section title, [(absolute path, text lines, frame colour)])] from an audit result."""
    root = result["root"]

    def ap(rel: str) -> str:
        return rel if os.path.isabs(rel) else os.path.join(root, rel)

    def base(d):
        return [_short(os.path.basename(d["path"])), f"{d['split']} / given {d['label']}"]

    out = []
    tiles = []
    for gi, g in enumerate(result["exact_duplicates"]["groups"]):
        col = (200, 0, 0) if g["across_splits"] or g["across_classes"] else (120, 120, 120)
        for d in g["members"][:4]:
            tiles.append((ap(d["path"]), base(d) + [f"group {gi + 1}: same {g['same']}"], col))
    if tiles:
        out.append(("exact duplicates (red: across splits or classes)", tiles[:PER_SECTION]))
    tiles = []
    for p in result["near_duplicates"]["pairs"]:
        col = (200, 0, 0) if p["a"]["split"] != p["b"]["split"] else (120, 120, 120)
        for d in (p["a"], p["b"]):
            tiles.append((ap(d["path"]), base(d) + [f"similarity {p['similarity']:.3f}"], col))
    if tiles:
        out.append(
            ("near-duplicate pairs (similarity: cosine of pooled features; red: across splits)", tiles[:PER_SECTION])
        )
    tiles = [
        (ap(d["path"]), base(d) + [f"suggested {d['suggested']}  score {d['score']:.2f}"], (200, 120, 0))
        for d in result["label_issues"]["items"]
    ]
    if tiles:
        out.append(("likely label errors (score: p(suggested) - p(given), out of fold)", tiles[:PER_SECTION]))
    tiles = [
        (ap(d["path"]), base(d) + [f"nearest {d['nearest_class']}  z {d['z']:.1f}"], (0, 90, 200))
        for d in result["outliers"]["items"]
    ]
    if tiles:
        out.append(
            ("outliers (far from every class; z: robust z-score of the nearest-class similarity)", tiles[:PER_SECTION])
        )
    return out


def contact_sheet_png(result: dict) -> bytes:
    """The PNG bytes (a one-line sheet saying nothing was flagged when nothing was)."""
    secs = sections(result)
    font = _font()
    cell_w, cell_h = TILE + 10, TILE + TEXT_H + 10
    width = COLS * cell_w + 10
    heights = [24 + (-(-len(t) // COLS)) * cell_h for _, t in secs]
    sheet = Image.new("RGB", (width, 40 + sum(heights)), "white")
    draw = ImageDraw.Draw(sheet)
    n_flag = sum(len(t) for _, t in secs)
    draw.text(
        (10, 10),
        f"audit of {result['root']}: {result['num_images']} images; {n_flag} tiles"
        if secs
        else f"audit of {result['root']}: nothing flagged",
        fill="black",
        font=font,
    )
    y = 40
    for (title, tiles), h in zip(secs, heights):
        draw.text((10, y + 4), title, fill="black", font=font)
        for k, (path, lines, col) in enumerate(tiles):
            x0 = 10 + (k % COLS) * cell_w
            y0 = y + 24 + (k // COLS) * cell_h
            th = _thumb(path)
            draw.rectangle([x0, y0, x0 + TILE + 4, y0 + TILE + 4], outline=col, width=3)
            sheet.paste(th, (x0 + 2 + (TILE - th.width) // 2, y0 + 2 + (TILE - th.height) // 2))
            for li, line in enumerate(lines):
                draw.text((x0 + 2, y0 + TILE + 8 + li * 13), line, fill="black", font=font)
        y += h
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", optimize=False)
    return buf.getvalue()
