"""What to leave out, as a list a person can edit: `flagged` (from an audit), `write_list` / `read_list`
(the file), `apply` (drop them from the splits; the splits remember what was left out and why).

Policy of `flagged` (what `fit --exclude-flagged` removes):
- an exact duplicate group within one class and split: every copy but the first;
- a group across splits: the val / test copies (train keeps one); across classes: every copy (which
  label is right is unknown);
- a near-duplicate pair across splits: the val / test image;
- every likely label error and every outlier.

List file format: one image per line, its path relative to the data folder (or absolute); `#`
starts a comment (the audit writes the reason there); blank lines are ignored.
"""

from __future__ import annotations

import os
from pathlib import Path

from transferzoo.zoo.fileio import atomic_write

SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}


def flagged(result: dict) -> list[tuple[str, str]]:
    """[(path relative to the data root, reason)] in a stable order, each path once."""
    out: dict[str, str] = {}

    def add(path: str, reason: str) -> None:
        out.setdefault(path, reason)

    for g in result["exact_duplicates"]["groups"]:
        m = sorted(g["members"], key=lambda d: (SPLIT_ORDER[d["split"]], d["path"]))
        if g["across_classes"]:
            labels = ", ".join(sorted({d["label"] for d in m}))
            for d in m:
                add(d["path"], f"exact duplicate with conflicting labels ({labels})")
        else:
            keep = m[0]
            for d in m[1:]:
                why = "leak: exact twin of" if d["split"] != keep["split"] else "exact duplicate of"
                add(d["path"], f"{why} {keep['path']}")
    for p in result["near_duplicates"]["pairs"]:
        a, b = sorted((p["a"], p["b"]), key=lambda d: SPLIT_ORDER[d["split"]])
        if a["split"] != b["split"]:
            add(b["path"], f"leak: near-duplicate of {a['path']} (similarity {p['similarity']:.3f})")
    for d in result["label_issues"]["items"]:
        add(d["path"], f"likely label error: given {d['label']}, suggested {d['suggested']} (score {d['score']:.3f})")
    for d in result["outliers"]["items"]:
        add(d["path"], f"outlier: far from every class (z {d['z']:.1f})")
    return list(out.items())


def write_list(path, entries: list[tuple[str, str]], header: str = "") -> None:
    lines = [
        "# images to leave out of training: transferzoo fit DATA --exclude THIS_FILE",
        "# delete a line to keep that image",
    ]
    if header:
        lines.append(f"# {header}")
    lines += [f"{p}  # {r}" for p, r in entries]
    atomic_write(Path(path), ("\n".join(lines) + "\n").encode("utf-8"))


def read_list(path) -> list[str]:
    """The paths in a list file (comments and blank lines dropped)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"exclude list {p} not found (write one with: transferzoo audit DATA --exclude-list {p})"
        )
    out = []
    for line in p.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def apply(splits, entries: list[tuple[str, str]], log=None) -> list[tuple[str, str]]:
    """Drop `entries` [(path relative to the root or absolute, reason)] from splits' train / val /
    test; records them in `splits.excluded` and returns what was dropped [(absolute path, reason)].
    A listed path that is in no split is reported, not an error (the folder may have changed)."""
    root = Path(splits.root)
    want = {os.path.abspath(p if os.path.isabs(p) else root / p): r for p, r in entries}
    dropped = []
    for name in ("train", "val", "test"):
        keep = []
        for s in splits.split(name):
            r = want.get(os.path.abspath(s.path))
            if r is None:
                keep.append(s)
            else:
                dropped.append((s.path, r))
        setattr(splits, name, keep)
    missing = len(want) - len(dropped)
    if log and missing:
        log(f"exclude: {missing} listed image(s) are not in the data folder (ignored)")
    for name in ("train", "val"):
        counts = splits.class_counts(name)
        empty = [c for c, k in counts.items() if k == 0]
        if empty:
            raise ValueError(f"excluding the listed images leaves no {name} images for class(es) {empty}; keep some")
    splits.excluded.extend(dropped)
    if log:
        log(f"exclude: left out {len(dropped)} image(s)")
    return dropped
