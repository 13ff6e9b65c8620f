"""`transferzoo demo`: classify real photos that installed packages ship (scikit-image's samples)
with the offline pretrained backbone."""
from __future__ import annotations

import os
from pathlib import Path

SAMPLES = ("chelsea", "coffee", "astronaut", "rocket")


def write_sample_photos(out: Path) -> list[Path]:
    from PIL import Image
    from skimage import data

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in SAMPLES:
        path = out / f"{name}.png"
        if not path.exists():
            tmp = path.with_suffix(".tmp.png")
            Image.fromarray(getattr(data, name)()).save(tmp)
            os.replace(tmp, path)
        paths.append(path)
    return paths


def run_demo(args) -> int:
    from zoo.predict import predict_images

    from .commands._common import print_json

    photos = write_sample_photos(Path(args.out) / "samples")
    results = predict_images("efficientnet_lite0", photos, top_k=3)
    if args.json:
        print_json([r.to_dict() for r in results])
        return 0
    print("efficientnet_lite0 (ImageNet weights, offline) on scikit-image's sample photos:")
    for r in results:
        best = ", ".join(f"{label} {p:.1%}" for _, label, p in r.top)
        print(f"  {Path(r.path).name:14s} {best}")
    return 0
