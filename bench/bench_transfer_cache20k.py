"""Feature caching at scale: generate a folder of small JPEGs (default 20,000, 10 classes), run
feature extraction through the on-disk cache, report images/s and peak RSS; then a second pass
(everything cached) for the reuse speed. Images are synthetic (random shapes/colours, 160x120
JPEG): this measures throughput and memory, not accuracy.

    .venv/bin/python bench/bench_transfer_cache20k.py [--n 20000] [--folder /tmp/tz20k]

Peak RSS is the process's ru_maxrss (Linux: KiB): it must stay flat as --n grows (only paths and
one chunk of features are held; features go to disk in 1024-image chunks).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402


def generate(folder: Path, n: int, classes: int = 10) -> list[str]:
    def one(i: int) -> str:
        c = i % classes
        p = folder / f"class{c}" / f"{i:06d}.jpg"
        if not p.exists():
            rng = np.random.default_rng(i)
            img = Image.new("RGB", (160, 120), tuple(int(v) for v in rng.integers(0, 255, 3)))
            d = ImageDraw.Draw(img)
            for _ in range(3):
                x, y = rng.integers(0, 140), rng.integers(0, 100)
                d.ellipse([x, y, x + 10 + 5 * c, y + 10 + 3 * c], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
            img.save(p, quality=85)
        return str(p)

    for c in range(classes):
        (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(n)))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--folder", default=str(Path(tempfile.gettempdir()) / "tz_cache_bench"))
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args()
    from transferzoo.transfer.config import FeatureConfig
    from transferzoo.transfer.features.engine import Extractor

    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()}", flush=True)
    t = time.perf_counter()
    paths = generate(Path(args.folder), args.n)
    print(f"generated/checked {len(paths)} JPEGs in {time.perf_counter() - t:.1f} s", flush=True)
    cache = args.cache_dir or tempfile.mkdtemp(prefix="tz_cache20k_")
    # the once-per-model ONNX export (torch tracing: a large, short memory spike) runs in a child
    # process on 4 other images, so this process's peak RSS is the steady-state pipeline's
    import subprocess

    warm = Path(args.folder) / "_warmup"
    warm.mkdir(exist_ok=True)
    wp = []
    for i in range(4):
        Image.new("RGB", (64, 64), (60 * i, 90, 30)).save(warm / f"{i}.jpg")
        wp.append(str(warm / f"{i}.jpg"))
    code = (
        "import sys; from transfer.engine import Extractor; from transfer.config import FeatureConfig; "
        f"Extractor('efficientnet_lite0', FeatureConfig(cache_dir={cache!r}), progress=False).extract({wp!r})"
    )
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(Path(__file__).resolve().parents[1]))
    print(f"ONNX export + check (child process, once per model): {time.perf_counter() - t:.1f} s", flush=True)
    rss0 = rss_mb()
    ex = Extractor("efficientnet_lite0", FeatureConfig(cache_dir=cache), progress=sys.stderr.isatty())
    t = time.perf_counter()
    fs = ex.extract(paths)
    first = time.perf_counter() - t
    rss1 = rss_mb()
    print(f"first pass: {len(paths)} images in {first:.1f} s = {len(paths) / first:.1f} images/s, engine {fs.engine}")
    print(
        f"peak RSS: {rss0:.0f} MB before, {rss1:.0f} MB after (features held in the result: "
        f"{sum(a.nbytes for a in fs.arrays.values()) / 2**20:.0f} MB)"
    )
    del fs
    ex2 = Extractor("efficientnet_lite0", FeatureConfig(cache_dir=cache), progress=False)
    t = time.perf_counter()
    fs2 = ex2.extract(paths)
    second = time.perf_counter() - t
    print(
        f"second pass (cached): {second:.2f} s = {len(paths) / second:.0f} images/s; "
        f"{fs2.timings['cached_images']} from cache; speed-up {first / second:.0f}x"
    )
    print(f"cache on disk: {sum(f.stat().st_size for f in Path(cache).rglob('*.npy')) / 2**20:.0f} MB")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
