"""Precision / recall of `transferzoo audit` on real data with known, injected problems.

For each dataset (hymenoptera, flowers from ../shared/datasets) a copy is made (symlinks; the feature
cache is keyed by content, so unchanged images come from the cache) with a given train/val split:
- 5% of the images (train + val) moved to another class at random (label errors);
- 20 train images copied byte for byte into val (exact duplicates across train/val);
- 20 train images re-encoded into val as near-duplicates: resized to 60%, JPEG quality 50, or a 10%
  crop (one edit each, in turn: `--near-mode mixed`, the default), or all three at once (`combined`).
The audit's findings are scored against what was injected. Findings the audit also makes on the
unmodified copy (real duplicates, real label noise in the original folders) are counted apart, not as
false positives; they are listed so a person can look at them (`--sheet`).

    python bench/bench_audit.py [--datasets hymenoptera flowers] [--near-mode mixed|combined|both]

Also prints the audit's wall time on the modified flowers copy with a warm feature cache (timing is
noisy on a shared machine).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TRANSFERZOO_SHARED", REPO.parent / "shared" / "datasets"))


def near_copy(src: str, dst: Path, kind: str, rng) -> None:
    im = Image.open(src).convert("RGB")
    kinds = ("resize", "jpeg", "crop") if kind == "combined" else (kind,)
    if "crop" in kinds:
        w, h = im.size
        dx, dy = int(w * 0.1), int(h * 0.1)
        ox, oy = int(rng.integers(0, dx + 1)), int(rng.integers(0, dy + 1))
        im = im.crop((ox, oy, ox + w - dx, oy + h - dy))
    if "resize" in kinds:
        im = im.resize((max(1, int(im.width * 0.6)), max(1, int(im.height * 0.6))), Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=50 if "jpeg" in kinds else 95)
    dst.write_bytes(buf.getvalue())


def make_copy(src_root: Path, out: Path, near_mode: str, seed: int = 0, inject: bool = True) -> dict:
    from transferzoo.transfer.data import scan_folder

    splits = scan_folder(src_root)  # the given split, or the default seeded split
    classes = splits.classes
    rng = np.random.default_rng(seed)
    items = [(s, "train") for s in splits.train] + [(s, "val") for s in splits.val]
    truth = {"flipped": set(), "exact": set(), "near": set()}

    def dest(split, label, name):
        d = out / split / classes[label]
        d.mkdir(parents=True, exist_ok=True)
        return d / name

    order = rng.permutation(len(items))
    n_flip = int(round(0.05 * len(items))) if inject else 0
    flip = set(order[:n_flip].tolist())
    train_idx = [i for i in order[n_flip:] if items[i][1] == "train"]
    exact_src = train_idx[:20] if inject else []
    near_src = train_idx[20:40] if inject else []
    for i, (s, split) in enumerate(items):
        label = s.label
        if i in flip:
            label = int(rng.choice([c for c in range(len(classes)) if c != s.label]))
        p = dest(split, label, Path(s.path).name)
        os.symlink(s.path, p)
        if i in flip:
            truth["flipped"].add(os.path.relpath(p, out))
    kinds = ("resize", "jpeg", "crop")
    for k, i in enumerate(exact_src):
        s = items[i][0]
        p = dest("val", s.label, f"dup{k}_{Path(s.path).name}")
        shutil.copyfile(s.path, p)
        truth["exact"].add((os.path.relpath(dest("train", s.label, Path(s.path).name), out), os.path.relpath(p, out)))
    for k, i in enumerate(near_src):
        s = items[i][0]
        p = dest("val", s.label, f"near{k}_{Path(s.path).stem}.jpg")
        near_copy(s.path, p, kinds[k % 3] if near_mode == "mixed" else "combined", rng)
        truth["near"].add((os.path.relpath(dest("train", s.label, Path(s.path).name), out), os.path.relpath(p, out)))
    return truth


def pairs_of(result: dict, what: str) -> set:
    if what == "exact":
        out = set()
        for g in result["exact_duplicates"]["groups"]:
            m = sorted(d["path"] for d in g["members"])
            out |= {(a, b) for a in m for b in m if a < b}
        return out
    return {tuple(sorted((p["a"]["path"], p["b"]["path"]))) for p in result["near_duplicates"]["pairs"]}


def prf(found: set, truth: set, known: set) -> dict:
    """Precision / recall; `known`: findings on the unmodified copy (not counted as false positives)."""
    tp = len(found & truth)
    fp = len(found - truth - known)
    return {
        "tp": tp,
        "fp": fp,
        "fn": len(truth - found),
        "precision": tp / max(1, tp + fp),
        "recall": tp / max(1, len(truth)),
        "also_on_unmodified": len((found - truth) & known),
    }


def run(name: str, near_mode: str, tmp: Path, sheet_dir: Path | None) -> dict:
    from transferzoo.transfer.audit.run import audit
    from transferzoo.transfer.audit.sheet import contact_sheet_png

    src = SHARED / name
    base = tmp / f"{name}-base"
    mod = tmp / f"{name}-{near_mode}"
    for d in (base, mod):
        if d.exists():
            shutil.rmtree(d)
    make_copy(src, base, near_mode, inject=False)
    truth = make_copy(src, mod, near_mode)
    log = lambda m: None  # noqa: E731
    r0 = audit(base, log=log)
    r = audit(mod, log=log)  # injected copies are computed here, the rest come from the cache
    t = time.perf_counter()
    r = audit(mod, log=log)  # warm: everything from the cache
    wall = time.perf_counter() - t
    exact_truth = {tuple(sorted(p)) for p in truth["exact"]}
    near_truth = {tuple(sorted(p)) for p in truth["near"]}
    if sheet_dir is not None:
        sheet_dir.mkdir(parents=True, exist_ok=True)
        (sheet_dir / f"{name}-unmodified.png").write_bytes(contact_sheet_png(r0))
        (sheet_dir / f"{name}-{near_mode}.png").write_bytes(contact_sheet_png(r))
    # the similarity of every injected pair, and the near-duplicate rule's gap swept (how it was chosen)
    from transferzoo.transfer.audit import findings as F
    from transferzoo.transfer.data import scan_folder
    from transferzoo.transfer.features.engine import Extractor

    ex = Extractor("efficientnet_lite0", progress=False)
    a = [str(mod / p) for p, _ in truth["near"]]
    b = [str(mod / q) for _, q in truth["near"]]
    fa, fb = ex.extract(a), ex.extract(b)
    sims = (F.normalise_rows(fa.get("top")) * F.normalise_rows(fb.get("top"))).sum(1)
    sp = scan_folder(mod)
    items = sp.train + sp.val
    rel = [os.path.relpath(x.path, mod) for x in items]
    Z = F.normalise_rows(ex.extract([x.path for x in items]).get("top"))
    pairs, psims, t2i, t2s, _ = F.similarity_scan(Z, np.array([x.label for x in items]), len(sp.classes), 0.95)
    injected = {q for _, q in truth["near"]}
    sweep = {}
    for gap in (0.0, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15):
        found = F.near_pairs(t2i, t2s, pairs, psims, gap, 0.7, 0.95)
        mine = {tuple(sorted((rel[i], rel[j]))) for i, j in found if rel[i] in injected or rel[j] in injected}
        tp = len(mine & near_truth)
        sweep[gap] = {"precision": round(tp / max(1, len(mine)), 3), "recall": round(tp / len(near_truth), 3)}
    labels = {d["path"] for d in r["label_issues"]["items"]}
    labels0 = {d["path"] for d in r0["label_issues"]["items"]}
    # label findings on the unmodified copy, by file name (a flipped file moved folder)
    labels0_names = {(Path(p).name) for p in labels0}
    known_labels = {p for p in labels if Path(p).name in labels0_names}
    lab = prf(labels, truth["flipped"], known_labels)
    lab["precision_raw"] = len(labels & truth["flipped"]) / max(1, len(labels))
    return {
        "dataset": name,
        "near_mode": near_mode,
        "images": r["num_images"],
        "exact": prf(pairs_of(r, "exact"), exact_truth, pairs_of(r0, "exact")),
        "near": prf(pairs_of(r, "near"), near_truth, pairs_of(r0, "near")),
        "near_injected_similarity": {"min": float(sims.min()), "median": float(np.median(sims))},
        "near_gap_sweep (pairs with an injected image)": sweep,
        "labels": lab,
        "flipped": len(truth["flipped"]),
        "oof_accuracy": r["label_issues"]["oof_accuracy"],
        "outliers": len(r["outliers"]["items"]),
        "outliers_unmodified": len(r0["outliers"]["items"]),
        "unmodified": {
            "exact_groups": len(r0["exact_duplicates"]["groups"]),
            "near_pairs": len(r0["near_duplicates"]["pairs"]),
            "label_issues": len(labels0),
        },
        "leak_val": r["leak"].get("val"),
        "audit_seconds": r["timings"]["total_seconds"],
        "audit_cpu_seconds": r["timings"]["cpu_seconds"],
        "warm_wall_seconds": round(wall, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["hymenoptera", "flowers"])
    ap.add_argument("--near-mode", choices=("mixed", "combined", "both"), default="both")
    ap.add_argument("--sheets", default="runs/bench_audit", help="folder for the contact sheets")
    args = ap.parse_args()
    modes = ("mixed", "combined") if args.near_mode == "both" else (args.near_mode,)
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        for name in args.datasets:
            if not (SHARED / name).is_dir():
                print(f"skip {name}: not found at {SHARED / name}")
                continue
            for mode in modes:
                res = run(name, mode, Path(tmp), Path(args.sheets))
                e, n, lab = res["exact"], res["near"], res["labels"]
                print(
                    f"{name} ({res['images']} images, near-duplicates {mode}): "
                    f"exact P {e['precision']:.3f} R {e['recall']:.3f} | "
                    f"near P {n['precision']:.3f} R {n['recall']:.3f} "
                    f"(injected cosine min {res['near_injected_similarity']['min']:.3f}, "
                    f"median {res['near_injected_similarity']['median']:.3f}) | "
                    f"labels P {lab['precision']:.3f} (raw {lab['precision_raw']:.3f}) R {lab['recall']:.3f} "
                    f"of {res['flipped']} flipped | outliers {res['outliers']} | "
                    f"audit {res['audit_seconds']:.2f} s ({res['audit_cpu_seconds']:.2f} s CPU), "
                    f"warm command wall {res['warm_wall_seconds']:.2f} s",
                    flush=True,
                )
                print("   ", res, flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
