"""Feature extraction images/s on the CPU and on the GPU, same folder, same process; and JPEG
decoding alone (all cores), the ceiling for either. Target where a GPU is lent: GPU >= 10x the
2-core CPU figure, or decoding stated as the limit.

    .venv/bin/python bench/bench_features_device.py [--data ../shared/datasets/hymenoptera]

Each device gets a new feature cache; its engine is built (exported, checked) on the first
`--warm` images, then the rest are timed: decode + inference + cache write, as `fit` runs them.
The GPU side is skipped, with the reason, where torch sees no CUDA device.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from transferzoo.transfer.config import FeatureConfig  # noqa: E402
from transferzoo.transfer.data import scan_folder  # noqa: E402
from transferzoo.transfer.features import engine as fe  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def decode_rate(model: str, paths: list[str], workers: int) -> float:
    decode = fe.image_decoder(model)
    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(decode, paths):
            pass
    return len(paths) / (time.perf_counter() - t)


def extract_rate(model: str, device: str, paths: list[str], warm: int, cache: Path, batch: int):
    ex = fe.Extractor(model, FeatureConfig(cache_dir=str(cache), device=device, batch_size=batch), progress=False)
    ex.extract(paths[:warm])  # engine built and checked here
    t = time.perf_counter()
    fs = ex.extract(paths[warm:])
    dt = time.perf_counter() - t
    return (len(paths) - warm) / dt, fs, ex


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=SHARED / "hymenoptera")
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--warm", type=int, default=16)
    ap.add_argument("--gpu-batch", type=int, default=128)
    args = ap.parse_args()
    s = scan_folder(args.data)
    paths = [x.path for x in s.train + s.val + s.test]
    cores = os.cpu_count() or 1
    print(f"{len(paths)} images from {args.data}, {args.model}, {cores} CPU cores, load {os.getloadavg()}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-dev-"))
    try:
        dec = decode_rate(args.model, paths, cores)
        print(f"decode only ({cores} threads): {dec:8.1f} images/s  (the ceiling for any device)")
        cpu_rate, cpu_fs, cpu_ex = extract_rate(args.model, "cpu", paths, args.warm, tmp / "cpu", 8)
        print(f"CPU features ({cpu_ex._engine.name}): {cpu_rate:8.1f} images/s")
        if not fe.cuda_available():
            print("GPU features: skipped (no CUDA device visible: torch.cuda.is_available() is False)")
            return
        gpu_rate, gpu_fs, gpu_ex = extract_rate(args.model, "cuda", paths, args.warm, tmp / "gpu", args.gpu_batch)
        info = gpu_ex.engine_info
        print(
            f"GPU features ({gpu_ex._engine.name}; check vs CPU {info.get('gpu_max_rel_diff')}): "
            f"{gpu_rate:8.1f} images/s"
        )
        print(f"GPU / CPU: {gpu_rate / cpu_rate:.1f}x (target >= 10x); GPU / decode ceiling {gpu_rate / dec:.2f}")
        if gpu_rate >= 0.8 * dec:
            print("the GPU run is decode-bound: JPEG decoding on the CPU cores is the limit")
        a, b = cpu_fs.get("top"), gpu_fs.get("top")
        rel = float(np.abs(a - b).max() / max(1.0, float(np.abs(a).max())))
        print(f"top features GPU vs CPU over {len(a)} images: max relative difference {rel:.2e}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
