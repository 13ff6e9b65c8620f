"""Running the audit: `audit` (the `transferzoo audit` command: scan, cached features, findings), the
hooks `plan` and `fit` call (`for_context`, `exclude_for_fit`), and the text forms of a result
(`format_text` for the terminal, `report_lines` for report.md, `counts` for summaries)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from transferzoo.zoo.fileio import file_digest

from .config import AuditConfig
from .core import audit_features, strip_private
from .exclude import apply, flagged, read_list


def content_keys(ctx) -> list[str]:
    """The images' content keys in ctx.features.paths order: the feature cache's own file keys (a
    lookup of the hashes it memoised while extracting, no file is read again); with
    `--cache-key stat` the cache has none, so the bytes are hashed here."""
    fs = ctx.features
    ex = getattr(ctx, "extractor", None)
    if ex is not None and ex.cache.key_mode == "content":
        return ex.cache.file_keys(fs.paths)
    return ["c:" + file_digest(p, lambda: hashlib.blake2b(digest_size=16)) for p in fs.paths]


def for_context(ctx, cfg: AuditConfig | None = None) -> dict:
    """The audit of a FitContext whose features are extracted (its splits as they are now)."""
    cfg = cfg or ctx.cfg.audit
    t = time.perf_counter()
    result = audit_features(ctx.splits, ctx.features, content_keys(ctx), cfg)
    result["timings"]["keys_seconds"] = round(time.perf_counter() - t - result["timings"]["total_seconds"], 3)
    result["features_pass"] = {
        "computed_images": ctx.features.timings.get("computed_images"),
        "cached_images": ctx.features.timings.get("cached_images"),
    }
    return result


def audit(data, cfg=None, log=None) -> dict:
    """`transferzoo audit DATA`: scan, extract (from the cache when warm), audit -> JSON-ready dict."""
    from transferzoo.transfer.config import FitConfig
    from transferzoo.transfer.context import FitContext, extract, load_splits

    cfg = cfg or FitConfig()
    log = log or (lambda m: None)
    t0 = time.perf_counter()
    ctx = FitContext(Path(data), cfg, load_splits(data, cfg, log), None, log, t0)
    extract(ctx)
    result = strip_private(for_context(ctx))
    result["model"] = cfg.model
    result["timings"]["features_seconds"] = ctx.timings.get("features_seconds")
    result["timings"]["wall_seconds"] = round(time.perf_counter() - t0, 3)
    return result


def plan_hook(ctx) -> dict | None:
    """`plan`: the audit's counts and headline lines, when enabled (the features are extracted already)."""
    if not ctx.cfg.audit.enabled or ctx.features is None:
        return None
    result = strip_private(for_context(ctx))
    return {"counts": counts(result), "lines": headline(result)}


def fit_hook(ctx) -> None:
    """`fit`, before the strategy runs: exclusions (`audit.exclude` list file, `audit.exclude_flagged`)
    and the audit shown in report.md (ctx.splits.audit). Extracts features first only when the
    strategy does not (partial / full) and the flagged images are asked for."""
    from transferzoo.transfer.context import extract

    acfg = ctx.cfg.audit
    if acfg.exclude:
        entries = [(p, f"listed in {acfg.exclude}") for p in read_list(acfg.exclude)]
        apply(ctx.splits, entries, ctx.log)
        if ctx.features is not None:
            _reindex(ctx)
    if acfg.exclude_flagged and ctx.features is None:
        extract(ctx)
    if ctx.features is None or not (acfg.enabled or acfg.exclude_flagged):
        return
    result = strip_private(for_context(ctx))
    if acfg.exclude_flagged:
        apply(ctx.splits, flagged(result), ctx.log)
        _reindex(ctx)
    ctx.splits.audit = {"counts": counts(result), "lines": report_lines(result, acfg.max_listed), "result": result}


def _reindex(ctx) -> None:
    import os

    import numpy as np

    pos = {p: i for i, p in enumerate(ctx.features.paths)}
    ctx.rows = {
        name: np.array([pos[os.path.abspath(x.path)] for x in ctx.splits.split(name)], dtype=np.int64)
        for name in ("train", "val", "test")
    }


# -- text ----------------------------------------------------------------------------------------
def counts(result: dict) -> dict:
    ex = result["exact_duplicates"]
    return {
        "images": result["num_images"],
        "exact_duplicate_groups": len(ex["groups"]),
        "exact_across_splits": ex["across_splits"],
        "exact_across_classes": ex["across_classes"],
        "near_duplicate_pairs": len(result["near_duplicates"]["pairs"]),
        "near_across_splits": result["near_duplicates"]["across_splits"],
        "val_exact_twins": result["leak"].get("val", {}).get("exact_twins", 0),
        "val_near_twins": result["leak"].get("val", {}).get("near_twins", 0),
        "label_issues": len(result["label_issues"]["items"]),
        "outliers": len(result["outliers"]["items"]),
        "flagged": len(flagged(result)),
        "has_leak": result["has_leak"],
    }


def headline(result: dict) -> list[str]:
    c = counts(result)
    lines = [
        f"exact duplicates: {c['exact_duplicate_groups']} group(s) ({c['exact_across_splits']} across splits, "
        f"{c['exact_across_classes']} across classes)",
        f"near-duplicates: {c['near_duplicate_pairs']} pair(s) ({c['near_across_splits']} across splits)",
    ]
    for split, lk in result["leak"].items():
        lines.append(
            f"leak: {lk['exact_twins']} of {lk['images']} {split} images have an exact twin in "
            f"{'/'.join(lk['twin_in'])} (+{lk['near_twins']} near): {split} accuracy may be inflated by up to "
            f"{100 * lk['max_inflation']:.1f} points ({100 * lk['max_inflation_with_near']:.1f} with near-duplicates)"
        )
    li = result["label_issues"]
    lines.append(
        f"likely label errors: {c['label_issues']} (confident learning; out-of-fold probe accuracy "
        f"{li['oof_accuracy']:.3f})"
    )
    lines.append(f"outliers (far from every class): {c['outliers']}")
    return lines


def _rows(result: dict, max_listed: int):
    """(section title, [row strings]) per finding."""
    out = []
    rows = []
    for g in result["exact_duplicates"]["groups"]:
        tags = [t for t, on in (("across splits", g["across_splits"]), ("across classes", g["across_classes"])) if on]
        members = ", ".join(f"{d['path']} ({d['split']}, {d['label']})" for d in g["members"])
        rows.append(f"same {g['same']}{' [' + ', '.join(tags) + ']' if tags else ''}: {members}")
    out.append(("exact duplicates", rows))
    rows = [
        f"{p['similarity']:.3f}  {p['a']['path']} ({p['a']['split']}, {p['a']['label']})  ~  "
        f"{p['b']['path']} ({p['b']['split']}, {p['b']['label']})"
        for p in result["near_duplicates"]["pairs"]
    ]
    out.append(("near-duplicates", rows))
    rows = [
        f"{d['score']:.3f}  {d['path']} ({d['split']}): given {d['label']} (p {d['given_prob']:.2f}), "
        f"suggested {d['suggested']} (p {d['suggested_prob']:.2f})"
        for d in result["label_issues"]["items"]
    ]
    out.append(("likely label errors (score = p(suggested) - p(given))", rows))
    rows = [
        f"z {d['z']:.1f}  {d['path']} ({d['split']}, {d['label']}): nearest class {d['nearest_class']}, "
        f"similarity {d['similarity']:.3f}"
        for d in result["outliers"]["items"]
    ]
    out.append(("outliers", rows))
    return [(t, r[:max_listed], len(r)) for t, r in out]


def format_text(result: dict, max_listed: int = 50) -> str:
    lines = [
        f"audit of {result['root']} ({result['num_images']} images, "
        f"{result.get('model', '')} {result['features']} features)"
    ]
    lines += ["  " + h for h in headline(result)]
    for title, rows, total in _rows(result, max_listed):
        if not total:
            continue
        lines.append(f"{title}: {total}" + (f" (first {len(rows)})" if total > len(rows) else ""))
        lines += ["  " + r for r in rows]
    t = result["timings"]
    fp = result.get("features_pass") or {}
    lines.append(
        f"features: {fp.get('cached_images')} from cache, {fp.get('computed_images')} computed; "
        f"audit {t['total_seconds']:.2f} s ({t['cpu_seconds']:.2f} s CPU)"
        + (f", wall {t['wall_seconds']:.1f} s" if "wall_seconds" in t else "")
    )
    return "\n".join(lines)


def report_lines(result: dict, max_listed: int = 50) -> list[str]:
    """Markdown lines for report.md's data audit section."""
    lines = ["- " + h for h in headline(result)]
    for title, rows, total in _rows(result, max_listed):
        if total:
            lines += ["", f"{title}: {total}" + (f" (first {len(rows)})" if total > len(rows) else ""), ""]
            lines += [f"- `{r}`" for r in rows]
    return lines
