"""`transferzoo run PIPELINE.yaml`: data -> plan -> fit -> export -> served check, one run directory.

OUT/
  pipeline.yaml      the resolved configuration
  state.json         which stages finished, with the fingerprint of the settings each depends on
  run/               the training run (transfer/RUN_DIR.md): model, plan, metrics, report
  model.onnx         the exported, parity-gated model (+ model.parity.json)
  serve.json         the served check: tritonclient + image endpoint vs onnxruntime run directly
  report.md          one page: plan and evidence, accuracy, export parity, serving latency

Re-running with the same file skips stages whose settings did not change; an interrupted
finetune resumes from its last epoch checkpoint. Every file is written atomically.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from transferzoo.zoo.config import to_dict
from transferzoo.zoo.fileio import atomic_write

from .config import PipelineConfig


@dataclass
class PipelineResult:
    out: Path
    fit: dict = field(default_factory=dict)  # metrics.json summary
    plan: dict = field(default_factory=dict)
    export: dict = field(default_factory=dict)  # parity report
    serve: dict = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # stages reused from an earlier run
    report: Path | None = None

    def summary(self) -> dict:
        fp32 = {c["name"]: c for c in self.export.get("fp32", [])}
        real = fp32.get("real images", {})
        return {
            "out": str(self.out),
            "strategy": self.fit.get("strategy"),
            "planned_strategy": self.fit.get("planned_strategy"),
            "model": self.fit.get("model"),
            "val_accuracy": self.fit.get("val_accuracy"),
            "num_train": self.fit.get("num_train"),
            "num_val": self.fit.get("num_val"),
            "export": {
                "path": self.export.get("output"),
                "exporter": self.export.get("exporter"),
                "precision": self.export.get("precision"),
                "max_abs_diff": real.get("max_abs_diff"),
                "top1_agreement": real.get("top1_agreement"),
            }
            if self.export
            else None,
            "serve": {
                k: self.serve.get(k)
                for k in (
                    "requests",
                    "max_abs_diff_vs_onnxruntime",
                    "classify_accuracy",
                    "latency_ms_p50",
                    "direct_ms_p50",
                )
            }
            if self.serve
            else None,
            "skipped_stages": self.skipped,
            "report": str(self.report) if self.report else None,
        }


class Pipeline:
    def __init__(self, cfg: PipelineConfig, log=print):
        self.cfg, self.log = cfg, log
        self.out = Path(cfg.out)
        self.state_path = self.out / "state.json"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}

    # -- bookkeeping
    def _done(self, stage: str, fingerprint: str) -> bool:
        return self.state.get(stage, {}).get("fingerprint") == fingerprint

    def _mark(self, stage: str, fingerprint: str, **info) -> None:
        self.state[stage] = {"fingerprint": fingerprint, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
        atomic_write(self.state_path, json.dumps(self.state, indent=2))

    def _invalidate_after(self, stage: str) -> None:
        order = ["fit", "export", "serve"]
        for later in order[order.index(stage) + 1 :]:
            self.state.pop(later, None)

    # -- stages
    def run(self) -> PipelineResult:
        import yaml

        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write(self.out / "pipeline.yaml", yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
        res = PipelineResult(self.out)
        self.stage_fit(res)
        if self.cfg.export.enabled:
            self.stage_export(res)
        if self.cfg.serve.enabled:
            self.stage_serve(res)
        res.report = self.write_report(res)
        return res

    def stage_fit(self, res: PipelineResult) -> None:
        run_dir = self.out / "run"
        fp = self.cfg.stage_hash("data", "fit")
        if self._done("fit", fp) and (run_dir / "metrics.json").is_file():
            self.log("fit: settings unchanged, reusing run/")
            res.skipped.append("fit")
        else:
            self._invalidate_after("fit")
            from transferzoo.transfer import fit

            cfg = self.cfg.fit
            # a finetune that was interrupted: continue from its last epoch checkpoint
            resume = (run_dir / "checkpoint").is_dir() and not (run_dir / "metrics.json").is_file()
            if resume:
                self.log("fit: resuming the interrupted run from its last checkpoint")
            self.log(f"fit: {self.cfg.data} with {cfg.model}, strategy {cfg.strategy}")
            fit(self.cfg.data, cfg, out=run_dir, log=lambda m: self.log(f"  {m}"), resume=resume)
            self._mark("fit", fp)
        res.fit = json.loads((run_dir / "metrics.json").read_text())
        res.plan = json.loads((run_dir / "plan.json").read_text()) if (run_dir / "plan.json").is_file() else {}

    def stage_export(self, res: PipelineResult) -> None:
        onnx_path = self.out / "model.onnx"
        fp = self.cfg.stage_hash("data", "fit", "export")
        if self._done("export", fp) and onnx_path.is_file():
            self.log("export: settings unchanged, reusing model.onnx")
            res.skipped.append("export")
        else:
            self._invalidate_after("export")
            from transferzoo.export.options import ExportOptions
            from transferzoo.export.pipeline import export
            from transferzoo.export.sources import load_run

            section = to_dict(self.cfg.export)
            section.pop("enabled")
            opts = ExportOptions(**section, out=onnx_path)
            self.log("export: ONNX with the parity gate on the validation images")
            export(load_run(self.out / "run"), opts, log=lambda m: self.log(f"  {m}"))
            self._mark("export", fp)
        res.export = json.loads(onnx_path.with_suffix(".parity.json").read_text())

    def stage_serve(self, res: PipelineResult) -> None:
        from .serve_check import serve_check

        self.log("serve: starting the server on a free loopback port")
        report = serve_check(
            self.out / "model.onnx", self.out / "run", self.cfg.serve, log=lambda m: self.log(f"  {m}")
        )
        atomic_write(self.out / "serve.json", json.dumps(report, indent=2))
        self._mark("serve", self.cfg.stage_hash("data", "fit", "export", "serve"))
        res.serve = report

    def write_report(self, res: PipelineResult) -> Path:
        from .report import render

        path = self.out / "report.md"
        atomic_write(path, render(res, self.cfg))
        return path


def run_pipeline(cfg: PipelineConfig, log=print) -> PipelineResult:
    return Pipeline(cfg, log).run()
