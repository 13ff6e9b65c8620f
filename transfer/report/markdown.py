"""report.md: the human side of a run directory (its figures are in `report.figures`)."""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Rows: true class; columns: predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def report_md(summary: dict, plan: dict | None, splits_summary: dict, labels: list[str]) -> str:
    lines = [f"# Training run: {summary.get('model', '?')}, strategy `{summary.get('strategy', '?')}`", ""]
    lines += ["## Result", "", "| metric | value |", "| --- | --- |"]
    for k, v in summary.items():
        if k in ("confusion", "per_class") or isinstance(v, (dict, list)):
            continue
        lines.append(f"| {k} | {_fmt(v)} |")
    lines.append("")
    knn = summary.get("knn")
    if knn:
        lines += [
            f"Baseline: k-nearest neighbours ({knn.get('metric')}, k={knn.get('k')}, chosen by leave-one-out): "
            f"val accuracy {_fmt(knn.get('val_accuracy'))}.",
            "",
        ]
    pc = summary.get("per_class")
    if pc:
        lines += ["## Per class (val)", "", "| class | images | accuracy (recall) |", "| --- | --- | --- |"]
        for name in labels:
            r = pc.get(name, {})
            lines.append(f"| {name} | {r.get('support', '')} | {_fmt(r.get('recall', ''))} |")
        lines.append("")
    if "confusion" in summary:
        lines += ["## Confusion matrix (val)", "", "![confusion matrix](confusion.png)", ""]
    lines += [
        "## Data",
        "",
        f"- root: `{splits_summary.get('root')}`",
        f"- {splits_summary.get('num_classes')} classes, {splits_summary.get('num_train')} train / "
        f"{splits_summary.get('num_val')} val / {splits_summary.get('num_test', 0)} test images"
        + (" (given split)" if splits_summary.get("given_split") else " (stratified split)"),
        f"- imbalance (largest / smallest train class): {splits_summary.get('imbalance')}",
    ]
    skipped = splits_summary.get("skipped") or []
    if skipped:
        lines.append(f"- skipped {len(skipped)} file(s):")
        lines += [f"  - `{s['path']}`: {s['reason']}" for s in skipped[:50]]
    for w in splits_summary.get("warnings") or []:
        lines.append(f"- warning: {w}")
    lines.append("")
    audit = splits_summary.get("audit")
    if audit:  # transfer.audit's findings, already worded (audit.json has them all)
        lines += ["## Data audit", "", *audit.get("lines", []), ""]
    excluded = splits_summary.get("excluded") or []
    if excluded:
        lines += [f"## Left out of training ({len(excluded)} images, excluded.tsv)", ""]
        lines += [f"- `{e['path']}`: {e['reason']}" for e in excluded[:100]]
        lines.append("")
    if plan:
        lines += ["## Plan", "", f"- strategy: **{plan.get('strategy')}**"]
        if plan.get("reasons"):
            lines += [f"- {r}" for r in plan["reasons"]]
        ev = plan.get("evidence") or {}
        if ev:
            lines += ["", "Evidence:", "", "```json"]
            import json

            lines.append(json.dumps(ev, indent=2, default=str))
            lines.append("```")
        lines.append("")
    return "\n".join(lines)
