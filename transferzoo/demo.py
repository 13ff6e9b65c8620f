"""`transferzoo demo`: the whole main job on an embedded default, nothing to bring.

1. the offline pretrained backbone classifies scikit-image's sample photos (the weights are real);
2. scikit-image's `lfw_subset` (real 25x25 face / non-face crops) is written out as an image folder;
3. the pipeline runs on it: plan -> fit -> export with the parity gate -> `transferzoo serve` on a
   free loopback port, queried through tritonclient and the image endpoint;
4. a short summary, and the path of the report.
"""

from __future__ import annotations

import io
import shutil
import sys
import time
from pathlib import Path

from transferzoo.zoo.fileio import atomic_write, commit

SAMPLES = ("chelsea", "coffee")


def write_sample_photos(out: Path) -> list[Path]:
    from PIL import Image
    from skimage import data

    paths = []
    for name in SAMPLES:
        path = out / f"{name}.png"
        if not path.exists():
            buf = io.BytesIO()
            Image.fromarray(getattr(data, name)()).save(buf, format="PNG")
            atomic_write(path, buf.getvalue())
        paths.append(path)
    return paths


def run_demo(args) -> int:
    from transferzoo.commands._common import print_json
    from transferzoo.pipeline.config import PipelineConfig
    from transferzoo.pipeline.runner import run_pipeline
    from transferzoo.transfer.config import FitConfig
    from transferzoo.transfer.sample_data import write_lfw_subset
    from transferzoo.zoo.predict import predict_images

    t0 = time.perf_counter()
    out = Path(args.out).resolve()
    say = (lambda m: print(m, file=sys.stderr)) if args.json else print
    quiet = lambda m: None  # noqa: E731  (the stages' details go to the report, not the terminal)

    say("1/4  pretrained efficientnet_lite0 (ImageNet weights from the installed package) on sample photos:")
    for r in predict_images("efficientnet_lite0", write_sample_photos(out / "photos"), top_k=1):
        say(f"       {Path(r.path).name:12s} -> {r.top[0][1]} ({r.top[0][2]:.0%})")

    data = out / "data"
    if not data.is_dir():
        tmp = out / ".data.tmp"
        shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted demo
        write_lfw_subset(tmp)
        commit(tmp, data)
    say(f"2/4  embedded dataset: scikit-image lfw_subset (200 real 25x25 crops, face / not_face) -> {data}")

    cfg = PipelineConfig(
        data=str(data), out=str(out / "pipeline"), fit=FitConfig(model="efficientnet_lite0", progress=False)
    ).resolved()
    say("3/4  pipeline: plan -> fit -> export (parity gate) -> serve (tritonclient + image endpoint)")
    res = run_pipeline(cfg, log=quiet)
    s = res.summary()
    plan = res.plan
    if args.json:
        print_json(dict(s, plan_reasons=plan.get("reasons"), wall_seconds=round(time.perf_counter() - t0, 1)))
        return 0
    say("4/4  summary")
    reasons = plan.get("reasons", [])
    for r in reasons[:3] + reasons[-1:] if len(reasons) > 4 else reasons:  # size, similarity, decision
        say(f"       plan: {r}")
    say(
        f"       strategy {s['strategy']} (planned {s['planned_strategy']}): val accuracy {s['val_accuracy']:.1%} "
        f"on {s['num_val']} images"
    )
    e = s["export"]
    say(
        f"       export: {e['exporter']} {e['precision']}, max |onnx - torch| {e['max_abs_diff']:.1e}, "
        f"top-1 agreement {e['top1_agreement']:.0%}"
    )
    v = s["serve"]
    say(
        f"       serve: {v['requests']} requests via tritonclient, identical to onnxruntime (max diff "
        f"{v['max_abs_diff_vs_onnxruntime']:.1e}); p50 {v['latency_ms_p50']} ms vs {v['direct_ms_p50']} ms direct; "
        f"image endpoint accuracy {v['classify_accuracy']:.0%}"
    )
    say(f"     report: {s['report']}   ({time.perf_counter() - t0:.0f} s in all)")
    return 0
