"""How much of a suite row's regret is training noise: the pilot and `partial` over training seeds.

    .venv/bin/python bench/bench_seed_spread.py [--dataset mixed15] [--pilot-seeds 0 1 2 3]
        [--partial-seeds 0 1 2] [--results bench/results/seed_spread.json]

The strategies bench runs every strategy once, at training seed 0, and so does the pilot. Both are
single draws: the pilot's reported standard error (McNemar, over its held-out images) leaves out
the spread between training seeds, and a regret taken against the best single run is biased up by
that run's luck. This bench runs, through the CLI a user runs, with only `--train-seed` varied (same
data split, same holdout, same planned recipe):
  - the pilot (`plan --pilot on --train-seed S`): its finetune-minus-probe difference per seed;
  - partial with the plan's settings (`fit --strategy auto --among partial --pilot off --train-seed S`);
  - stages once (its L-BFGS probe does not depend on the training seed);
and prints the seed mean and SD of each beside the pilot's reported SE, and auto's regret (when it
chose stages) against partial's seed mean instead of its seed-0 run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_strategies import REPO, folder  # noqa: E402  (the suite's datasets, built the same way)

from transferzoo.zoo.fileio import write_json  # noqa: E402

CLI = [sys.executable, "-m", "transferzoo"]


def run(cmd: list[str]) -> None:
    subprocess.run(CLI + cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mixed15")
    ap.add_argument("--pilot-seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--partial-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "seed_spread.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_seed_spread_"))
    data = folder(args.dataset, work)
    common = ["--cache-dir", str(work / "features"), "--no-progress"]

    pilots = []
    for s in args.pilot_seeds:
        out = work / f"plan{s}.json"
        subprocess.run(
            CLI + ["plan", str(data), *common, "--pilot", "on", "--train-seed", str(s), "--json"],
            check=True,
            stdout=out.open("w"),
            stderr=subprocess.DEVNULL,
        )
        p = json.loads(out.read_text())["evidence"]["pilot"]
        d = p["finetune_minus_probe"]
        pilots.append({"seed": s, "difference": d["difference"], "reported_se": d["standard_error"], **p})
        print(f"pilot seed {s}: {d['difference']:+.3f} +- {d['standard_error']:.3f} ({p['seconds']:.0f} s)", flush=True)

    def val(strategy_args: list[str], name: str) -> dict:
        run(["fit", str(data), *common, *strategy_args, "--out", str(work / "runs" / name)])
        return json.loads((work / "runs" / name / "metrics.json").read_text())

    partial = []
    for s in args.partial_seeds:
        m = val(["--strategy", "auto", "--among", "partial", "--pilot", "off", "--train-seed", str(s)], f"p{s}")
        partial.append({"seed": s, "val_accuracy": m["val_accuracy"], "trained_blocks": m.get("trained_blocks")})
        print(f"partial@plan seed {s}: val {m['val_accuracy']:.3f} ({m.get('trained_blocks')} blocks)", flush=True)
    stages = val(["--strategy", "stages"], "stages")["val_accuracy"]

    def spread(xs):
        return round(statistics.mean(xs), 4), round(statistics.stdev(xs), 4) if len(xs) > 1 else None

    dm, dsd = spread([p["difference"] for p in pilots])
    pm, psd = spread([p["val_accuracy"] for p in partial])
    se = round(statistics.mean(p["reported_se"] for p in pilots), 4)
    summary = {
        "dataset": args.dataset,
        "pilot_difference_mean": dm,
        "pilot_difference_seed_sd": dsd,
        "pilot_reported_se_mean": se,
        "partial_val_mean": pm,
        "partial_val_seed_sd": psd,
        "stages_val": stages,
        "partial_minus_stages_mean": round(pm - stages, 4),
        "pilot_under_statement": round(pm - stages - dm, 4),
    }
    print(
        f"\n{args.dataset}: pilot finetune-minus-probe {dm:+.3f} (seed SD {dsd}, reported SE {se:.3f}); "
        f"partial@plan val {pm:.3f} (seed SD {psd}) vs stages {stages:.3f}: {pm - stages:+.3f} over stages; "
        f"the pilot under-states it by {pm - stages - dm:.3f}"
    )
    write_json(args.results, {"summary": summary, "pilots": pilots, "partial": partial})


if __name__ == "__main__":
    main()
