"""Write a run directory (format `transferzoo-run/1`, see transfer/RUN_DIR.md). Used by every
strategy; export reads the result from files alone.

The files are committed together (`zoo.fileio.atomic_commit`: every temp file written and fsynced,
then the renames, then the folders fsynced), and run.json is written last: a directory with a
run.json is a complete run, whose model and report belong together. Temp files a killed write left
behind are removed first.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, is_dataclass
from pathlib import Path

import numpy as np
import yaml

from transferzoo.zoo.fileio import atomic_commit, json_bytes, remove_stale_temps, write_json
from transferzoo.zoo.spec import ModelSpec

from .data import DataSplits, Sample

FORMAT = "transferzoo-run/1"
REQUIRED_SUMMARY = ("strategy", "model", "val_accuracy", "num_classes", "num_train", "num_val", "wall_seconds")


def _tsv(samples: list[Sample], root: Path) -> str:
    return "".join(f"{os.path.relpath(s.path, root)}\t{s.label}\n" for s in samples)


def _safetensors_bytes(state: dict) -> bytes:
    """The model file: torch tensors (finetuning) or numpy arrays (a probe on cached features,
    written without torch); the same format either way."""
    if all(isinstance(v, np.ndarray) for v in state.values()):
        from safetensors.numpy import save as save_numpy

        return save_numpy({k: np.ascontiguousarray(v) for k, v in state.items()}, metadata={"format": "pt"})
    from safetensors.torch import save

    # contiguous, de-aliased copies: safetensors refuses shared storage
    state = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    return save(state, metadata={"format": "pt"})


def write_run(
    run_dir,
    *,
    spec: ModelSpec,
    state: dict,
    labels,
    preprocessing,
    weights: dict,
    summary: dict,
    config: dict,
    plan: dict | None,
    splits: DataSplits,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write everything RUN_DIR.md lists; `state` is the state dict of the trained
    `zoo.assembly.TransferModel` of `spec`. `summary` must hold at least REQUIRED_SUMMARY; if it has
    "confusion" (val confusion matrix, rows = true class) confusion.png is drawn from it.
    `extra_files` (relative path -> bytes) are written too and may override confusion.png/report.md
    (finetuning passes metrics.jsonl, curves.png, misclassified.png). Returns the run directory."""
    from transferzoo.transfer.report.figures import confusion_png
    from transferzoo.transfer.report.markdown import report_md

    missing = [k for k in REQUIRED_SUMMARY if k not in summary]
    assert not missing, f"summary lacks {missing}"
    assert state and all(k.startswith(("backbone.", "head.")) for k in state), "not a TransferModel state dict"
    labels = [str(l) for l in labels]
    assert len(labels) == spec.num_classes, (len(labels), spec.num_classes)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    stale = run_dir / "run.json"
    if stale.exists():  # rewriting a run: mark it incomplete until the new run.json lands
        stale.unlink()
    remove_stale_temps(run_dir)
    remove_stale_temps(run_dir / "splits")
    pre = preprocessing.to_dict() if hasattr(preprocessing, "to_dict") else dict(preprocessing)
    cfg = asdict(config) if is_dataclass(config) else dict(config)

    files: dict[Path, bytes | str] = {
        run_dir / "model.safetensors": _safetensors_bytes(state),
        run_dir / "config.yaml": yaml.safe_dump(json.loads(json_bytes(cfg)), sort_keys=False),
        run_dir / "labels.json": json_bytes(labels),
    }
    split_files = {}
    for name in ("train", "val", "test"):
        samples = splits.split(name)
        if samples or name != "test":
            files[run_dir / "splits" / f"{name}.tsv"] = _tsv(samples, splits.root)
            split_files[name] = f"splits/{name}.tsv"
    files[run_dir / "plan.json"] = json_bytes(
        plan if plan is not None else {"strategy": summary["strategy"], "planned": False}
    )
    files[run_dir / "metrics.json"] = json_bytes(summary)
    if splits.excluded:  # what the user asked to leave out (fit --exclude / --exclude-flagged), and why
        rows = "".join(f"{os.path.relpath(p, splits.root)}\t{r}\n" for p, r in splits.excluded)
        files[run_dir / "excluded.tsv"] = ("path\treason\n" + rows).encode("utf-8")
    if splits.audit and splits.audit.get("result") is not None:
        files[run_dir / "audit.json"] = json_bytes(splits.audit["result"])
    extra_files = dict(extra_files or {})
    if "confusion.png" not in extra_files and summary.get("confusion") is not None:
        extra_files["confusion.png"] = confusion_png(summary["confusion"], labels)
    if "report.md" not in extra_files:
        extra_files["report.md"] = report_md(summary, plan, splits.summary(), labels).encode("utf-8")
    for rel, data in extra_files.items():
        target = (run_dir / rel).resolve()
        assert run_dir.resolve() in target.parents, f"extra file {rel!r} escapes the run directory"
        files[target] = data
    atomic_commit(files)
    run = {
        "format": FORMAT,
        "spec": spec.to_dict(),
        "labels": labels,
        "preprocessing": pre,
        "weights": dict(weights),
        "summary": summary,
        "data_root": str(splits.root),
        "splits": split_files,
    }
    write_json(run_dir / "run.json", run)
    return run_dir


def load_model(run_dir):
    """Rebuild the trained model from a run directory (as export does) -> (the
    `zoo.assembly.TransferModel` in eval mode, run.json)."""
    from safetensors.torch import load_file

    from transferzoo.zoo import assembly as za

    run_dir = Path(run_dir)
    run = json.loads((run_dir / "run.json").read_text())
    model = za.build(za.ModelSpec.from_dict(run["spec"]), pretrained=False)
    model.load_state_dict(load_file(str(run_dir / "model.safetensors")))
    return model.eval(), run
