"""The classic PyTorch transfer-learning tutorial recipe vs `fit --strategy auto`, same backbone
(efficientnet_lite0), same data (hymenoptera), one process.

Baseline ("ConvNet as fixed feature extractor", pytorch.org tutorial): frozen backbone (kept in
eval mode, BatchNorm statistics frozen; `--bn-train` for the tutorial's literal train mode), a new
Linear head trained with SGD (lr 0.001, momentum 0.9, StepLR step 7 gamma 0.1), batch 4, on
augmented images (RandomResizedCrop 224 + horizontal flip), 25 epochs; val accuracy after the last
epoch. Every epoch re-decodes, re-augments and re-runs the frozen backbone on every image.

    .venv/bin/python bench/bench_transfer_tutorial.py [--epochs 25]

On the shared 2-core machine 25 epochs take many minutes; `--epochs N` runs fewer and
extrapolates the wall time linearly (time per epoch is constant: same images, same work), and
the accuracy printed is then the accuracy after N epochs (say so when quoting it).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from transferzoo import zoo
from transferzoo.transfer.config import FitConfig
from transferzoo.transfer.data import ImageDataset, scan_folder
from transferzoo.transfer.strategies import fit
from transferzoo.zoo.config import override

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def tutorial(data: Path, epochs: int, threads: int, bn_train: bool = False) -> dict:
    from torchvision import transforms as T

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    pre = zoo.preprocessing("efficientnet_lite0")
    norm = T.Normalize(pre.mean, pre.std)
    train_tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    s = scan_folder(data)
    train = DataLoader(ImageDataset(s.train, train_tf), batch_size=4, shuffle=True, num_workers=1)
    val = DataLoader(ImageDataset(s.val, zoo.transforms("efficientnet_lite0")), batch_size=16, num_workers=1)
    model = zoo.create("efficientnet_lite0", num_classes=2)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.get_classifier().parameters():
        p.requires_grad_(True)
    opt = torch.optim.SGD(model.get_classifier().parameters(), lr=0.001, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.1)
    crit = torch.nn.CrossEntropyLoss()
    setup = time.perf_counter() - t0
    epoch_times = []
    for ep in range(epochs):
        te = time.perf_counter()
        # the tutorial calls model.train(): with batch 4 the frozen backbone's BatchNorm layers then
        # normalise with 4-image statistics and overwrite their running averages. Default here: the
        # frozen backbone stays in eval mode (the stronger baseline); --bn-train is the literal recipe.
        model.train() if bn_train else model.eval()
        for x, y in train:
            opt.zero_grad()
            loss = crit(model(x), y)  # noqa: F841
            loss.backward()
            opt.step()
        sched.step()
        epoch_times.append(time.perf_counter() - te)
        print(
            f"  tutorial epoch {ep + 1}/{epochs}: {epoch_times[-1]:.1f} s, last loss {float(loss.detach()):.3f}",
            flush=True,
        )
    te = time.perf_counter()
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in val:
            correct += int((model(x).argmax(1) == y).sum())
    eval_s = time.perf_counter() - te
    per_epoch = sum(epoch_times) / len(epoch_times)
    return {
        "val_accuracy": correct / len(s.val),
        "epochs_run": epochs,
        "wall_s": setup + sum(epoch_times) + eval_s,
        "per_epoch_s": per_epoch,
        "wall_25_s": setup + 25 * per_epoch + eval_s,
        "wall_25_best_s": setup + 25 * min(epoch_times) + eval_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(SHARED / "hymenoptera"))
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--bn-train", action="store_true", help="literal tutorial: backbone BatchNorm in train mode")
    args = ap.parse_args()
    data = Path(args.data)
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()}", flush=True)
    cfg = override(FitConfig(strategy="auto"), {"features.cache_dir": tempfile.mkdtemp(prefix="bench_tut_")})
    t = time.perf_counter()
    res = fit(data, cfg)
    ours_s = time.perf_counter() - t
    ours_acc = res.summary["val_accuracy"]
    print(
        f"ours (auto -> {res.summary['strategy']}, {res.summary['feature_set']}, cold cache incl. ONNX export): "
        f"val accuracy {ours_acc:.4f}, {ours_s:.1f} s",
        flush=True,
    )
    tut = tutorial(data, args.epochs, args.threads, args.bn_train)
    print(
        f"tutorial ({tut['epochs_run']} epochs): val accuracy {tut['val_accuracy']:.4f}, {tut['wall_s']:.1f} s "
        f"({tut['per_epoch_s']:.1f} s/epoch)"
    )
    if args.epochs != 25:
        print(
            f"tutorial, 25 epochs extrapolated: {tut['wall_25_s']:.0f} s (accuracy above is after {args.epochs} epochs)"
        )
    print(
        f"\n| recipe | val accuracy | wall s |\n|---|---|---|\n| tutorial, {tut['epochs_run']} epochs | "
        f"{tut['val_accuracy']:.4f} | {tut['wall_s']:.1f} |"
    )
    if args.epochs != 25:
        print(f"| tutorial, 25 epochs (time extrapolated) | - | {tut['wall_25_s']:.0f} |")
    print(f"| ours, fit --strategy auto | {ours_acc:.4f} | {ours_s:.1f} |")
    print(
        f"\nwall-time ratio tutorial(25 epochs) / ours: {tut['wall_25_s'] / ours_s:.1f}x (mean epoch time); "
        f"{tut['wall_25_best_s'] / ours_s:.1f}x if every epoch were as fast as the fastest one measured"
    )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
