"""Why `partial` caches the frozen prefix: one epoch of partial finetuning that runs the whole
network on every image (streamed, `--no-cache-prefix`) against one epoch on cached activations
(the trained suffix only), plus the one-off cost of building the cache, and the prefix engines
(onnxruntime vs eager PyTorch) that build it. Same images, same model, one process.

    .venv/bin/python bench/bench_finetune_prefix.py [--data DIR] [--images 400] [--image-size 192] [--views 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from transferzoo.transfer.config import FinetuneConfig
from transferzoo.transfer.data import scan_folder
from transferzoo.transfer.finetune import prefix_cache as pc
from transferzoo.transfer.finetune.finetuner import Finetuner

SHARED = Path(os.environ.get("TRANSFERZOO_SHARED", Path(__file__).resolve().parents[2] / "shared" / "datasets"))


def epoch_seconds(ft: Finetuner) -> float:
    from transferzoo.transfer.finetune.optim import create_optimizer

    opt = create_optimizer(ft.model, ft.cfg)
    data = ft.loop_data()
    ft.set_train()
    t = time.perf_counter()
    for x, y in data.train(0):
        loss = torch.nn.functional.cross_entropy(ft.trainable(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(SHARED / "flowers"))
    ap.add_argument("--images", type=int, default=400, help="training images used (a stratified subset)")
    ap.add_argument("--image-size", type=int, default=192)
    ap.add_argument("--views", type=int, default=2)
    args = ap.parse_args()
    splits = scan_folder(args.data)
    rng = np.random.default_rng(0)
    splits.train = [
        splits.train[i]
        for i in sorted(rng.choice(len(splits.train), min(args.images, len(splits.train)), replace=False))
    ]
    splits.val = splits.val[:64]
    print(f"load average before: {os.getloadavg()}; torch threads {torch.get_num_threads()}", file=sys.stderr)
    common = dict(unfreeze=1, image_size=args.image_size, views=args.views, checkpoint=False, workers=2)
    tmp = Path(tempfile.mkdtemp(prefix="bench_prefix_"))
    streamed = Finetuner(
        splits,
        "efficientnet_lite0",
        "partial",
        FinetuneConfig(cache_prefix=False, **common),
        run_dir=tmp / "s",
        progress=False,
    )
    s_epoch = epoch_seconds(streamed)
    streamed.close()
    rows = [("streamed: whole network every epoch", s_epoch, None)]
    for engine in ("onnxruntime", "torch"):
        cached = Finetuner(
            splits,
            "efficientnet_lite0",
            "partial",
            FinetuneConfig(prefix_engine=engine, **common),
            run_dir=tmp / engine,
            progress=False,
        )
        build = cached.cache_info["seconds"]
        c_epoch = epoch_seconds(cached)
        rows.append((f"cached ({engine} prefix): suffix only", c_epoch, build))
        pc.remove(tmp / engine / "cache")
    n = len(splits.train)
    print(
        f"\nefficientnet_lite0, partial (top block), {args.image_size} px, {n} training images, {args.views} "
        "cached views\n"
    )
    print("| epoch | seconds / epoch | images/s | one-off cache build s |\n| --- | --- | --- | --- |")
    for name, sec, build in rows:
        print(f"| {name} | {sec:.1f} | {n / sec:.0f} | {'-' if build is None else f'{build:.1f}'} |")
    c = rows[1][1]
    print(
        f"\nepoch speed-up, cached vs streamed: {s_epoch / c:.1f}x; the cache pays for itself after "
        f"{rows[1][2] / max(s_epoch - c, 1e-9):.1f} epochs; onnxruntime vs torch cache build: "
        f"{rows[2][2] / rows[1][2]:.2f}x"
    )
    print(f"load average after: {os.getloadavg()}", file=sys.stderr)


if __name__ == "__main__":
    main()
