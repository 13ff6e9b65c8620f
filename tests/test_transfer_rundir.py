"""The run-directory writer: every file RUN_DIR.md lists, and the model rebuilds from files alone."""

from __future__ import annotations

import json

import numpy as np
import torch
import yaml
from PIL import Image

from transferzoo import zoo
from transferzoo.transfer.data import scan_folder
from transferzoo.transfer.rundir import load_model, write_run
from transferzoo.zoo import assembly as za


def test_write_run_layout_and_rebuild(tmp_path):
    data = tmp_path / "data"
    for c in ("cat", "dog", "eel"):
        (data / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(data / c / f"{i}.png")
    splits = scan_folder(data, val_fraction=0.25)
    spec = za.ModelSpec("efficientnet_lite0", num_classes=3, stages=(2, 4))
    model = za.build(spec, pretrained=False).eval()
    summary = {
        "strategy": "stages",
        "model": spec.model,
        "val_accuracy": 0.5,
        "num_classes": 3,
        "num_train": len(splits.train),
        "num_val": len(splits.val),
        "wall_seconds": 1.0,
        "confusion": [[1, 0, 0], [0, 1, 0], [1, 0, 0]],
    }
    run = write_run(
        tmp_path / "run",
        spec=spec,
        state=model.state_dict(),
        labels=splits.classes,
        preprocessing=zoo.preprocessing(spec.model),
        weights=za.weights_provenance(model),
        summary=summary,
        config={"strategy": "stages", "seed": 0},
        plan={"strategy": "stages"},
        splits=splits,
        extra_files={"metrics.jsonl": b"{}\n"},
    )
    for f in (
        "run.json",
        "model.safetensors",
        "config.yaml",
        "labels.json",
        "splits/train.tsv",
        "splits/val.tsv",
        "plan.json",
        "metrics.json",
        "confusion.png",
        "report.md",
        "metrics.jsonl",
    ):
        assert (run / f).is_file(), f
    assert not list(run.glob(".*.tmp"))
    meta = json.loads((run / "run.json").read_text())
    assert meta["format"] == "transferzoo-run/1" and meta["labels"] == ["cat", "dog", "eel"]
    assert meta["spec"]["stages"] == [2, 4] and meta["data_root"] == str(splits.root)
    assert yaml.safe_load((run / "config.yaml").read_text()) == {"strategy": "stages", "seed": 0}
    lines = (run / "splits" / "val.tsv").read_text().splitlines()
    assert len(lines) == 3 and all((splits.root / l.split("\t")[0]).is_file() for l in lines)
    assert (run / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert "strategy `stages`" in (run / "report.md").read_text()
    rebuilt, _ = load_model(run)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
