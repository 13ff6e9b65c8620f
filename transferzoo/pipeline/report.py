"""report.md for a pipeline run: the one page a person reads — the plan and its evidence, accuracy,
curves and confusion matrix (from the training run), export parity and serving."""

from __future__ import annotations

import json
from pathlib import Path


def _fmt(v, pct=False):
    if v is None:
        return "-"
    if pct:
        return f"{v:.1%}"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def render(res, cfg) -> str:
    out = Path(res.out)
    run = out / "run"
    f, p = res.fit, res.plan
    lines = [f"# Pipeline report: {Path(cfg.data).name}", ""]
    lines += [
        "| | |",
        "| --- | --- |",
        f"| data | `{cfg.data}` ({f.get('num_train')} train / {f.get('num_val')} val images, "
        f"{f.get('num_classes')} classes) |",
        f"| model | {f.get('model')} |",
        f"| strategy | **{f.get('strategy')}** (planned: {f.get('planned_strategy')}) |",
        f"| validation accuracy | **{_fmt(f.get('val_accuracy'), pct=True)}** |",
        f"| training wall time | {_fmt(f.get('wall_seconds'))} s |",
    ]
    if res.skipped:
        lines.append(f"| reused stages | {', '.join(res.skipped)} (settings unchanged) |")
    lines += ["", "## The plan and its evidence", ""]
    for r in p.get("reasons", []):
        lines.append(f"- {r}")
    if p.get("note"):
        lines.append(f"- note: {p['note']}")
    ev = p.get("evidence")
    if ev:
        lines += [
            "",
            "<details><summary>evidence (plan.json)</summary>",
            "",
            "```json",
            json.dumps(ev, indent=2, default=str)[:6000],
            "```",
            "</details>",
        ]
    pics = [
        (n, t)
        for n, t in (
            ("curves.png", "loss and accuracy"),
            ("confusion.png", "confusion matrix (val)"),
            ("misclassified.png", "misclassified validation images"),
        )
        if (run / n).is_file()
    ]
    if pics:
        lines += ["", "## Training", ""]
        for name, title in pics:
            lines += [f"**{title}**", "", f"![{title}](run/{name})", ""]
    lines.append("Full training report: [run/report.md](run/report.md)")
    if res.export:
        e = res.export
        lines += [
            "",
            "## Export",
            "",
            f"`{Path(e.get('output', 'model.onnx')).name}`: exporter **{e.get('exporter')}**, precision "
            f"{e.get('precision')}, "
            f"opset {e.get('opset')}, input {e.get('input_format')}, {_fmt((e.get('size_bytes') or 0) / 1e6)} MB. "
            f"Checks: onnx.checker (full), strict shape inference, then parity against PyTorch:",
            "",
            "| check | images | max abs diff | min cosine | top-1 agreement | accuracy PyTorch | accuracy ONNX "
            "| passed |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for key in ("fp32", "int8", "fp16"):
            for c in e.get(key, []):
                lines.append(
                    f"| {key}: {c['name']} | {c['count']} | {_fmt(c['max_abs_diff'])} | {c['min_cosine']:.6f} | "
                    f"{_fmt(c['top1_agreement'], pct=True)} | {_fmt(c.get('accuracy_reference'), pct=True)} | "
                    f"{_fmt(c.get('accuracy_onnx'), pct=True)} | {'yes' if c.get('passed') else 'NO'} |"
                )
    if res.serve:
        s = res.serve
        lines += [
            "",
            "## Serving",
            "",
            f"`transferzoo serve` on {s.get('url')}: {s.get('requests')} validation images through the real "
            f"`tritonclient` (binary tensors) and the image endpoint.",
            "",
            f"- max |served - onnxruntime direct| = {_fmt(s.get('max_abs_diff_vs_onnxruntime'))}",
            f"- latency p50 through HTTP: {s.get('latency_ms_p50')} ms (onnxruntime direct: "
            f"{s.get('direct_ms_p50')} ms, batch 1)",
            f"- image endpoint (`/v2/models/{s.get('model_name')}/classify`) accuracy: "
            f"{_fmt(s.get('classify_accuracy'), pct=True)}",
        ]
    return "\n".join(lines) + "\n"
