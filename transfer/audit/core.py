"""The audit of one scanned folder, from its cached features: `audit_features` -> a JSON-ready dict.

Images are every decodable image of train + val + test; paths in the result are relative to the
data root. What "leak" means: a val (or test) image with a twin in train (same bytes or same
pixels: exact; or a near-duplicate, `findings.near_pairs`). A leaked val image is, at worst, one the
model answers from memory, so the val accuracy can be inflated by at most leaked / val images.
"""

from __future__ import annotations

import os
import time

import numpy as np

from transferzoo.transfer.threads import compute_threads

from . import findings as F
from .config import AuditConfig

NEAR_FEATURE = "top"  # the pooled pre-logits features (what the default probe trains on)
LABEL_FEATURE = "top"
PROBE_LAMBDA = 0.1  # L2 strength of the out-of-fold probes (a middle value of the fit's CV grid)


def _rel(path: str, root) -> str:
    try:
        return os.path.relpath(path, root)
    except ValueError:
        return path


def audit_features(splits, fs, keys: list[str] | None, cfg: AuditConfig | None = None) -> dict:
    """Audit `splits` (transfer.data.DataSplits) from FeatureSet `fs` (rows: any superset of the
    split images, by absolute path) and the images' content keys (the feature cache's file keys, in
    fs.paths order; None: exact duplicates by bytes are not looked for)."""
    cfg = cfg or AuditConfig()
    t0, c0 = time.perf_counter(), time.process_time()
    pos = {p: i for i, p in enumerate(fs.paths)}
    items = []  # (feature row, sample, split)
    for split in ("train", "val", "test"):
        for s in splits.split(split):
            r = pos.get(os.path.abspath(s.path))
            if r is not None and fs.ok[r]:
                items.append((r, s, split))
    n, C = len(items), len(splits.classes)
    rows = np.array([r for r, _, _ in items], dtype=np.int64)
    paths = [s.path for _, s, _ in items]
    rel = [_rel(p, splits.root) for p in paths]
    split_of = [sp for _, _, sp in items]
    y = np.array([s.label for _, s, _ in items], dtype=np.int64)
    classes = list(splits.classes)

    def who(i: int) -> dict:
        return {"path": rel[i], "split": split_of[i], "label": classes[y[i]]}

    # -- exact duplicates: same content key, then same decoded pixels ----------------------------
    uf = F.UnionFind(n)
    same_key: set = set()
    how: dict[int, str] = {}
    if keys is not None:
        by_key: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            by_key.setdefault(keys[r], []).append(i)
        for members in by_key.values():
            for a in members[1:]:
                uf.union(members[0], a)
            for a in members:
                for b in members:
                    if a < b:
                        same_key.add((a, b))
    Z = F.normalise_rows(fs.get(NEAR_FEATURE)[rows])
    with compute_threads(1):  # on a shared machine one thread beats a contended pool
        pairs, sims, top2_idx, top2_sim, knn = F.similarity_scan(Z, y, C, cfg.near_same_photo)
    t_scan = time.perf_counter()
    pix = F.pixel_twins(paths, pairs, sims, same_key)
    for a, b in pix:
        uf.union(a, b)
    pix_set = set(pix)
    groups = []
    for g in uf.groups():
        g_pairs = [(a, b) for a in g for b in g if a < b]
        kind_how = "bytes" if all(p in same_key for p in g_pairs) else "pixels"
        sp = {split_of[i] for i in g}
        lb = {int(y[i]) for i in g}
        groups.append(
            {
                "members": [who(i) for i in g],
                "same": kind_how,
                "across_splits": len(sp) > 1,
                "across_classes": len(lb) > 1,
                "_idx": g,
            }
        )
        for i in g:
            how[i] = kind_how
    rep = np.arange(n)
    for g in groups:
        rep[g["_idx"]] = min(g["_idx"])

    # -- near duplicates (not exact) --------------------------------------------------------------
    exact_pairs = same_key | pix_set
    near = []
    found = F.near_pairs(top2_idx, top2_sim, pairs, sims, cfg.near_gap, cfg.near_min_similarity, cfg.near_same_photo)
    for (a, b), sim in sorted(found.items(), key=lambda kv: -kv[1]):
        if (a, b) in exact_pairs or rep[a] == rep[b]:
            continue
        near.append({"a": who(a), "b": who(b), "similarity": round(sim, 4), "_idx": (a, b)})

    # -- leaks: val / test images with a twin in an earlier split ----------------------------------
    def twins(split: str, others: tuple[str, ...], pair_list) -> set[int]:
        out = set()
        for a, b in pair_list:
            for u, v in ((a, b), (b, a)):
                if split_of[u] == split and split_of[v] in others:
                    out.add(u)
        return out

    exact_pair_list = [(a, b) for g in groups for a in g["_idx"] for b in g["_idx"] if a < b]
    near_pair_list = [d["_idx"] for d in near]
    num = {sp: sum(1 for x in split_of if x == sp) for sp in ("train", "val", "test")}
    leak = {}
    for split, others in (("val", ("train",)), ("test", ("train", "val"))):
        if not num[split]:
            continue
        ex = twins(split, others, exact_pair_list)
        nr = twins(split, others, near_pair_list) - ex
        leak[split] = {
            "images": num[split],
            "exact_twins": len(ex),
            "near_twins": len(nr),
            "max_inflation": round(len(ex) / num[split], 4),
            "max_inflation_with_near": round((len(ex) + len(nr)) / num[split], 4),
            "twin_in": list(others),
        }

    # -- label issues: confident learning on out-of-fold probabilities -----------------------------
    t_lab = time.perf_counter()
    X = fs.get(LABEL_FEATURE)[rows]
    with compute_threads(1):  # small L-BFGS problems: one thread is fastest, and on a loaded machine by far
        P = F.out_of_fold_probabilities(X, y, C, rep, folds=cfg.folds, lam=PROBE_LAMBDA, seed=splits.seed)
    issues = F.label_issues(P, y, cfg.label_min_margin)
    label_items = [
        dict(
            who(d["index"]),
            suggested=classes[d["suggested"]],
            **{k: round(d[k], 4) for k in ("given_prob", "suggested_prob", "score")},
            _idx=d["index"],
        )
        for d in issues
    ]
    oof_acc = float((P.argmax(1) == y).mean()) if n else float("nan")

    # -- outliers ------------------------------------------------------------------------------------
    best, nearest, z = F.outlier_scores(knn)
    out_idx = [int(i) for i in np.argsort(z) if z[i] < -cfg.outlier_z]
    outliers = [
        dict(
            who(i),
            nearest_class=classes[int(nearest[i])],
            similarity=round(float(best[i]), 4),
            z=round(float(z[i]), 2),
            _idx=i,
        )
        for i in out_idx
    ]

    result = {
        "root": str(splits.root),
        "num_images": n,
        "classes": classes,
        "features": NEAR_FEATURE,
        "exact_duplicates": {
            "groups": groups,
            "images": sum(len(g["members"]) for g in groups),
            "within_class": sum(1 for g in groups if not g["across_classes"] and not g["across_splits"]),
            "across_classes": sum(1 for g in groups if g["across_classes"]),
            "across_splits": sum(1 for g in groups if g["across_splits"]),
            "by_bytes": keys is not None,
        },
        "near_duplicates": {
            "rule": {"gap": cfg.near_gap, "min_similarity": cfg.near_min_similarity, "same_photo": cfg.near_same_photo},
            "pairs": near,
            "across_splits": sum(1 for d in near if d["a"]["split"] != d["b"]["split"]),
        },
        "leak": leak,
        "label_issues": {
            "method": "confident learning (per-class thresholds, 'both' rule), out-of-fold linear-probe probabilities",
            "folds": cfg.folds,
            "oof_accuracy": round(oof_acc, 4),
            "items": label_items,
        },
        "outliers": {"z_threshold": -cfg.outlier_z, "items": outliers},
        "timings": {
            "scan_seconds": round(t_scan - t0, 3),
            "pixel_checks_and_groups_seconds": round(t_lab - t_scan, 3),
            "label_seconds": round(time.perf_counter() - t_lab, 3),
            "total_seconds": round(time.perf_counter() - t0, 3),
            "cpu_seconds": round(time.process_time() - c0, 3),  # this process: what a shared machine inflates least
        },
    }
    result["has_leak"] = any(v["exact_twins"] > 0 for v in leak.values())
    return result


def strip_private(obj):
    """The result without the internal `_idx` fields (for JSON and files)."""
    if isinstance(obj, dict):
        return {k: strip_private(v) for k, v in obj.items() if not k.startswith("_")}
    if isinstance(obj, list):
        return [strip_private(v) for v in obj]
    return obj
