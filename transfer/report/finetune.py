"""The finetuning part of a run's report: learning curves, the per-epoch table, the confusion
matrix and the most confident mistakes (misclassified.png), appended to the run's report.md."""

from __future__ import annotations

import json
import os

import numpy as np


def misclassified(result, samples, k: int = 16) -> list[dict]:
    """The `k` most confident wrong predictions on val: path, true, predicted, confidence."""
    wrong = np.flatnonzero(result.val_pred != result.val_true)
    conf = result.val_prob[wrong, result.val_pred[wrong]] if len(wrong) else np.array([])
    order = wrong[np.argsort(-conf)][:k]
    return [
        {
            "index": int(i),
            "path": samples[i].path,
            "true": int(result.val_true[i]),
            "pred": int(result.val_pred[i]),
            "confidence": round(float(result.val_prob[i, result.val_pred[i]]), 4),
        }
        for i in order
    ]


def finetune_section(summary: dict, history: list[dict], mistakes: list[dict], labels: list[str], root: str) -> str:
    lines = ["## Training", ""]
    cache = summary.get("prefix_cache")
    lines.append(
        f"- {summary.get('strategy')}: {summary.get('trained_blocks')} of {summary.get('num_blocks')} blocks trained "
        f"({summary.get('trainable_params', 0) / 1e6:.2f}M of {summary.get('total_params', 0) / 1e6:.2f}M parameters), "
        f"optimizer {summary.get('optimizer')}, lr {summary.get('lr'):.2e}, {summary.get('schedule')} schedule, "
        f"{summary.get('image_size')} px"
    )
    if cache:
        lines.append(
            f"- frozen prefix cached once (activations entering `{cache['cut']}`, {cache['views']} augmented views "
            f"per training image, {cache['bytes'] / 2**20:.0f} MiB, {cache['seconds']:.1f}s)"
        )
    lines.append(
        f"- initial loss {summary.get('initial_loss')} vs ln(C) = {summary.get('ln_num_classes')}"
        + ("" if summary.get("initial_loss_ok", True) else " (**far off**: check labels and preprocessing)")
    )
    lines.append(
        f"- {summary.get('epochs_run')} epoch(s), {summary.get('stopped')}; best epoch {summary.get('best_epoch')} "
        "(its weights are the model)"
    )
    oc = summary.get("overfit_check")
    if oc:
        lines.append(
            f"- overfit check on {oc['images']} images: loss {oc['final_loss']:.4f}, "
            f"{'passed' if oc['passed'] else 'FAILED'}"
        )
    if summary.get("search"):
        lines += [
            "",
            "Random search (lr, weight decay):",
            "",
            "| trial | lr | weight decay | val accuracy | val loss |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {t['trial']} | {t['lr']:.2e} | {t['weight_decay']:.1e} | {t['val_accuracy']:.4f} | "
            f"{t['val_loss']:.4f} |"
            for t in summary["search"]
        ]
    lines += [
        "",
        "![learning curves](curves.png)",
        "",
        "| epoch | train loss | train acc | val loss | val acc | lr | s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {h['epoch']} | {h['train_loss']:.4f} | {h['train_accuracy']:.4f} | {h['val_loss']:.4f} | "
        f"{h['val_accuracy']:.4f} | {h['lr']:.2e} | {h['seconds']:.1f} |"
        for h in history
    ]
    lines.append("")
    if mistakes:
        lines += [
            "## Most confident mistakes (val)",
            "",
            "![misclassified](misclassified.png)",
            "",
            "| image | true | predicted | confidence |",
            "| --- | --- | --- | --- |",
        ]
        lines += [
            f"| `{os.path.relpath(m['path'], root)}` | {labels[m['true']]} | {labels[m['pred']]} | "
            f"{m['confidence']:.2f} |"
            for m in mistakes
        ]
        lines.append("")
    return "\n".join(lines)


def finetune_extra_files(result, splits, plan) -> dict[str, bytes]:
    """metrics.jsonl, curves.png, misclassified.png and report.md (the run's report + this section)."""
    from .figures import curves_png, misclassified_png
    from .markdown import report_md

    labels = list(splits.classes)
    mistakes = misclassified(result, splits.val)
    files = {
        "metrics.jsonl": "".join(json.dumps(h) + "\n" for h in result.history).encode(),
        "curves.png": curves_png(result.history, f"{result.summary['model']} ({result.summary['strategy']})"),
    }
    png = misclassified_png(mistakes, labels)
    if png is not None:
        files["misclassified.png"] = png
    report = report_md(result.summary, plan, splits.summary(), labels)
    report += "\n" + finetune_section(result.summary, result.history, mistakes, labels, str(splits.root))
    files["report.md"] = report.encode()
    return files
