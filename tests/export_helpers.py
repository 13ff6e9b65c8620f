"""Run directories for the export tests, written by following transfer/RUN_DIR.md (export reads runs
only through these files): zoo.assembly.build(spec) + model.safetensors + run.json + labels.json +
metrics.json + splits/*.tsv.

`fit_linear_head` gives a real trained model cheaply: the pretrained backbone stays frozen and only
the linear head is fitted (full-batch L-BFGS on the backbone's features of real training images)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from transferzoo import zoo
from transferzoo.zoo import assembly as za
from transferzoo.zoo.images import IMAGE_EXTENSIONS


def folder_split(root: Path, labels: list[str], limit_per_class: int | None = None) -> list[tuple[str, int]]:
    """(path relative to root.parent.parent's data root, class index) for root/<class>/*."""
    rows = []
    for i, c in enumerate(labels):
        files = sorted(p for p in (root / c).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        rows += [(p, i) for p in files[:limit_per_class]]
    return rows


def hymenoptera_splits(data_root: Path, limit_per_class: int | None = None) -> dict[str, list[tuple[str, int]]]:
    labels = ["ants", "bees"]
    return {
        s: [(str(p.relative_to(data_root)), i) for p, i in folder_split(data_root / s, labels, limit_per_class)]
        for s in ("train", "val")
    }


def write_run_dir(
    run_dir: Path,
    spec: za.ModelSpec,
    model: torch.nn.Module,
    labels: list[str],
    data_root: Path,
    splits: dict[str, list[tuple[str, int]]],
    summary: dict | None = None,
) -> Path:
    run_dir = Path(run_dir)
    (run_dir / "splits").mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(run_dir / "model.safetensors"))
    for name, rows in splits.items():
        (run_dir / "splits" / f"{name}.tsv").write_text("".join(f"{p}\t{i}\n" for p, i in rows))
    pre = zoo.preprocessing(spec.model)
    summary = {
        "strategy": "linear_probe",
        "model": spec.model,
        "num_classes": spec.num_classes,
        "num_train": len(splits.get("train", [])),
        "num_val": len(splits.get("val", [])),
        "wall_seconds": 0.0,
        **(summary or {}),
    }
    prov = getattr(model.backbone, "pretrained_cfg", {}).get("transferzoo", {})
    run = {
        "format": "transferzoo-run/1",
        "spec": spec.to_dict(),
        "labels": labels,
        "preprocessing": pre.to_dict(),
        "weights": {
            "name": zoo.get(spec.model).name,
            "source": prov.get("source", "random"),
            "location": prov.get("location", ""),
            "sha256": prov.get("sha256", ""),
        },
        "summary": summary,
        "data_root": str(data_root),
        "splits": {name: f"splits/{name}.tsv" for name in splits},
    }
    (run_dir / "run.json").write_text(json.dumps(run, indent=2))
    (run_dir / "labels.json").write_text(json.dumps(labels))
    (run_dir / "metrics.json").write_text(json.dumps(summary))
    return run_dir


def random_run(
    run_dir: Path, data_root: Path, model: str = "mobilenetv3_small_100", seed: int = 0, limit_per_class: int | None = 8
) -> Path:
    """A run directory with random weights (fast: for export mechanics, not accuracy)."""
    torch.manual_seed(seed)
    spec = za.ModelSpec(model=model, num_classes=2)
    net = za.build(spec, pretrained=False).eval()
    return write_run_dir(
        run_dir, spec, net, ["ants", "bees"], data_root, hymenoptera_splits(data_root, limit_per_class)
    )


def fit_linear_head(model: za.TransferModel, x: np.ndarray, y: np.ndarray, steps: int = 60) -> None:
    """Fit `model.head` (a linear layer) on frozen backbone features of x (N x 3 x H x W float)."""
    with torch.inference_mode():
        feats = torch.cat([model.features(torch.from_numpy(x[i : i + 16])) for i in range(0, len(x), 16)])
    feats, target = feats.clone(), torch.from_numpy(y).long()
    head = model.head[-1]
    opt = torch.optim.LBFGS(head.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(feats), target) + 1e-3 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)


def trained_lite0_run(run_dir: Path, data_root: Path, train_per_class: int = 60) -> tuple[Path, float]:
    """efficientnet_lite0 (real ImageNet weights) with a linear head fitted on hymenoptera; returns
    the run directory and its val accuracy (PyTorch)."""
    from transferzoo.export.images import from_split, prepare

    torch.manual_seed(0)
    spec = za.ModelSpec(model="efficientnet_lite0", num_classes=2)
    net = za.build(spec, pretrained=True).eval()
    splits = hymenoptera_splits(data_root)
    train_rows = splits["train"][:train_per_class] + [r for r in splits["train"] if r[1] == 1][:train_per_class]
    pre = zoo.preprocessing(spec.model)
    tsv = run_dir / "fit_train.tsv"
    run_dir.mkdir(parents=True, exist_ok=True)
    tsv.write_text("".join(f"{p}\t{i}\n" for p, i in train_rows))
    batch = prepare(from_split(tsv, data_root, "fit"), pre)
    fit_linear_head(net, batch.float, batch.labels)
    val = prepare(from_split_rows(splits["val"], data_root, run_dir), pre)
    with torch.inference_mode():
        logits = torch.cat([net(torch.from_numpy(val.float[i : i + 16])) for i in range(0, len(val.float), 16)])
    acc = float((logits.argmax(1).numpy() == val.labels).mean())
    write_run_dir(run_dir, spec, net, ["ants", "bees"], data_root, splits, {"val_accuracy": acc})
    return run_dir, acc


def from_split_rows(rows, data_root: Path, tmp_dir: Path):
    from transferzoo.export.images import from_split

    tsv = tmp_dir / "rows.tsv"
    tsv.write_text("".join(f"{p}\t{i}\n" for p, i in rows))
    return from_split(tsv, data_root, "rows")


# ---------------------------------------------------------------- fixtures shared by tests/test_export_*.py
import pytest  # noqa: E402

HYMENOPTERA_LABELS = ["ants", "bees"]


def module_source(module: torch.nn.Module, size: int = 32, labels: list[str] | None = None, name: str = "tiny"):
    """A Source around any module (fast tests of the pipeline's mechanics)."""
    from transferzoo.export.sources import Source

    labels = labels or [f"c{i}" for i in range(4)]
    pre = zoo.Preprocessing((3, size, size), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear", 0.875, "center")
    return Source("checkpoint", name, module.eval(), labels, pre, name, "test")


def tiny_net(num_classes: int = 4, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU6(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, num_classes),
    ).eval()


@pytest.fixture(scope="session")
def mv3_run(tmp_path_factory, hymenoptera) -> Path:
    """Random-weight mobilenetv3_small_100 run on hymenoptera (8 images per class per split)."""
    return random_run(tmp_path_factory.mktemp("runs") / "mv3", hymenoptera, seed=0)


@pytest.fixture(scope="session")
def mv3_run_b(tmp_path_factory, hymenoptera) -> Path:
    return random_run(tmp_path_factory.mktemp("runs") / "mv3b", hymenoptera, seed=1)


@pytest.fixture(scope="session")
def lite0_run(tmp_path_factory, hymenoptera) -> tuple[Path, float]:
    """efficientnet_lite0 with real weights and a head fitted on hymenoptera: (run dir, val accuracy)."""
    torch.set_num_threads(2)
    return trained_lite0_run(tmp_path_factory.mktemp("runs") / "lite0", hymenoptera, train_per_class=40)
