"""GPU: end-to-end training images/s of `full` (efficientnet_lite0, 224 px, bf16 autocast,
channels-last, pinned memory, DataLoader workers decoding real JPEGs) against the same training step
on synthetic in-memory input: the ratio is the data pipeline's cost. Then short real runs of
`full` and `partial` (cached prefix on the GPU) to check the GPU code paths end to end.

    python bench/bench_finetune_gpu.py DATA [--batch-size 128] [--workers 12] [--steps 30]

Needs CUDA (exits otherwise). DATA: an image folder (e.g. flowers or a subset of it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from transferzoo.transfer import fit
from transferzoo.transfer.config import FinetuneConfig, FitConfig
from transferzoo.transfer.data import scan_folder
from transferzoo.transfer.finetune.finetuner import Finetuner
from transferzoo.transfer.finetune.optim import create_optimizer


def steps_per_second(ft: Finetuner, batches, steps: int, warmup: int = 5) -> float:
    model, dev = ft.model, ft.device
    opt = create_optimizer(model, ft.cfg)
    crit = torch.nn.CrossEntropyLoss()
    ft.set_train()
    n, t0 = 0, None
    for i, (x, y) in enumerate(batches):
        if i == warmup:
            torch.cuda.synchronize()
            t0, n = time.perf_counter(), 0
        x = x.to(dev, non_blocking=True).contiguous(memory_format=torch.channels_last)
        y = y.to(dev, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = crit(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += len(y)
        if i + 1 >= warmup + steps:
            break
    torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=min(12, os.cpu_count() or 1))
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, {os.cpu_count()} CPUs, workers {args.workers}")
    splits = scan_folder(args.data)
    # one long epoch (the training list repeated) so the measurement never waits on an epoch restart
    long = scan_folder(args.data)
    need = (args.steps + 10) * args.batch_size
    long.train = (long.train * (need // len(long.train) + 1))[:need]
    cfg = FinetuneConfig(batch_size=args.batch_size, workers=args.workers, checkpoint=False)
    ft = Finetuner(long, "efficientnet_lite0", "full", cfg, progress=False)
    assert ft.amp and ft.device.type == "cuda"

    def loader_batches():
        yield from ft._streamed_train(0)

    g = torch.Generator().manual_seed(0)
    xs = torch.randn(args.batch_size, 3, 224, 224, generator=g).pin_memory()
    ys = torch.randint(0, len(splits.classes), (args.batch_size,), generator=g).pin_memory()

    def synthetic():
        while True:
            yield xs, ys

    syn = steps_per_second(ft, synthetic(), args.steps)
    e2e = steps_per_second(ft, loader_batches(), args.steps)
    t = time.perf_counter()
    n = 0
    for i, (x, _) in enumerate(loader_batches()):
        n += len(x)
        if i >= args.steps:
            break
    loader_only = n / (time.perf_counter() - t)
    ft.close()
    print("\n| input | train images/s |\n| --- | --- |")
    print(
        f"| synthetic, in GPU-pinned memory | {syn:.0f} |\n| real JPEGs through the DataLoader (end to end) | "
        f"{e2e:.0f} |"
        f"\n| DataLoader alone (decode + augment, no training) | {loader_only:.0f} |"
    )
    print(
        f"\nend-to-end / synthetic: {e2e / syn:.2f} (the data pipeline's cost: {100 * (1 - e2e / syn):.0f}% of "
        "throughput)"
    )

    for strategy, extra in (("full", {}), ("partial", {"unfreeze": 1, "views": 2})):
        cfg = FitConfig(
            strategy=strategy,
            progress=False,
            finetune=FinetuneConfig(
                epochs=3, batch_size=args.batch_size, workers=args.workers, checkpoint=False, **extra
            ),
        )
        t = time.perf_counter()
        s = fit(args.data, cfg, out=f"/tmp/gpu_run_{strategy}").summary
        print(
            f"{strategy}: val accuracy {s['val_accuracy']:.4f} ({s['num_train']} train / {s['num_val']} val), "
            f"{time.perf_counter() - t:.1f}s, device {s['device']}, cache {s.get('prefix_cache', {}).get('engine')}"
        )


if __name__ == "__main__":
    main()
