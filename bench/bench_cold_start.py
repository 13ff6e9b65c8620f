"""`transferzoo fit DATA --strategy auto` as a user times it: a new process from the shell, wall
time from outside it, interpreter start-up, imports and exit included. Target (hymenoptera): cold
<= 6 s, cached <= 3 s, at val accuracy 0.954.

    .venv/bin/python bench/bench_cold_start.py [--data ../shared/datasets/hymenoptera] [--repeats 2]

Runs, for this tree ("new") and the tree it branched from ("old": `git archive` of the merge-base
with main, unpacked to a temporary folder; `--old-ref` to pick another commit, `--no-old` to skip):
  cold     a new, empty TRANSFERZOO_CACHE: no features, no exported ONNX feature model
  cached   the same command again on that cache: features and engine reused
Old and new alternate run by run (old cold, new cold, old cached, new cached, ...) so that the
load of a shared machine falls on both alike; medians are printed with the new/old ratio. The
last new run's `--profile` (where the seconds went) is printed as well.

Both trees are byte-compiled before the first run (a user's install has its .pyc files after
its first run). Both trees run with this interpreter (`python -m transferzoo`, what the console script runs): the
old tree through a folder of links laid out as the installed package (transferzoo.zoo -> zoo/, ...),
first on PYTHONPATH; the new one as installed (editable) here.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
SUBPACKAGES = ("zoo", "transfer", "export", "serve")  # pyproject package-dir: transferzoo.<name> -> <name>/


def package_farm(tree: Path, dest: Path) -> Path:
    """dest/transferzoo laid out as installed from `tree` (links), for PYTHONPATH=dest."""
    pkg = dest / "transferzoo"
    pkg.mkdir(parents=True)
    for item in (tree / "transferzoo").iterdir():
        if item.name != "__pycache__":
            (pkg / item.name).symlink_to(item)
    for name in SUBPACKAGES:
        (pkg / name).symlink_to(tree / name)
    return dest


def old_tree(ref: str, dest: Path) -> Path:
    base = subprocess.run(["git", "-C", str(REPO), "merge-base", "HEAD", ref], capture_output=True, text=True)
    commit = base.stdout.strip() if base.returncode == 0 else ref
    tree = dest / "old"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    print(f"old tree: {commit[:10]} ({ref}) in {tree}", flush=True)
    return tree


def run_fit(
    farm: Path | None, data: Path, cache: Path, out: Path, profile: bool, strategy: str = "auto", extra=()
) -> dict:
    env = dict(os.environ, TRANSFERZOO_CACHE=str(cache), PYTHONDONTWRITEBYTECODE="1")
    env.pop("TRANSFERZOO_PROFILE", None)
    if farm is not None:
        env["PYTHONPATH"] = str(farm) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "transferzoo", "fit", str(data), "--strategy", strategy, "--out", str(out), "--json"]
    cmd += ["--no-progress", *extra] + (["--profile"] if profile else [])
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    # run from a temporary folder, not a source tree: `-m` puts the working directory first on sys.path
    p = subprocess.run(cmd, cwd=str(out.parent), env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    ru2 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru2.ru_utime - ru.ru_utime) + (ru2.ru_stime - ru.ru_stime)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    s = json.loads(p.stdout)
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "val_accuracy": s["val_accuracy"],
        "fit_wall_s": s["wall_seconds"],
        "err": p.stderr,
        "summary": s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=SHARED / "hymenoptera")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--old-ref", default="main", help="the old side: the merge-base of HEAD and this ref")
    ap.add_argument("--no-old", action="store_true", help="time this tree only")
    args = ap.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"no dataset at {args.data}")
    print(f"load average before: {os.getloadavg()}, {os.cpu_count()} CPUs", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-cold-"))
    try:
        sides = {"new": (REPO, None)}
        if not args.no_old:
            tree = old_tree(args.old_ref, tmp)
            sides = {"old": (tree, package_farm(tree, tmp / "old-pkg")), **sides}
        # both trees byte-compiled first, as a user's install is after its first run: the old tree is
        # a fresh archive, and importing its sources uncompiled (PYTHONDONTWRITEBYTECODE below keeps
        # the runs from writing) cost it ~1 s a run here that the new tree did not pay
        for tree, _farm in sides.values():
            dirs = [str(tree / d) for d in ("transferzoo", *SUBPACKAGES)]
            subprocess.run([sys.executable, "-m", "compileall", "-q", *dirs], check=True, capture_output=True)
        results: dict[tuple[str, str], list[dict]] = {}
        last_profile = {}
        for r in range(args.repeats):
            caches = {side: tmp / f"cache-{side}-{r}" for side in sides}
            for run in ("cold", "cached"):
                for side, (_tree, farm) in sides.items():
                    res = run_fit(farm, args.data, caches[side], tmp / f"run-{side}", profile=side == "new")
                    results.setdefault((side, run), []).append(res)
                    if side == "new":
                        last_profile[run] = res["err"]
                    print(
                        f"repeat {r + 1} {side:3s} {run:6s}: {res['wall_s']:6.2f} s from the shell, "
                        f"{res['cpu_s']:6.2f} CPU s "
                        f"(fit's own wall_seconds {res['fit_wall_s']:.2f}), val accuracy {res['val_accuracy']:.4f}",
                        flush=True,
                    )
        print()
        print(f"{'run':8s} {'side':4s} {'median wall s':>14s} {'median CPU s':>13s} {'val acc':>8s}  target (wall)")
        med, cpu = {}, {}
        for (side, run), rs in results.items():
            med[side, run] = statistics.median(x["wall_s"] for x in rs)
            cpu[side, run] = statistics.median(x["cpu_s"] for x in rs)
        for run, target in (("cold", 6.0), ("cached", 3.0)):
            for side in sides:
                acc = results[side, run][-1]["val_accuracy"]
                print(f"{run:8s} {side:4s} {med[side, run]:14.2f} {cpu[side, run]:13.2f} {acc:8.4f}  <= {target:g} s")
            if "old" in sides:
                print(
                    f"{run:8s} new/old: wall {med['new', run] / med['old', run]:.2f}, "
                    f"CPU {cpu['new', run] / cpu['old', run]:.2f}"
                )
        print(f"load average after: {os.getloadavg()}")
        for run, text in last_profile.items():
            prof = text[text.find("profile (seconds):") :] if "profile (seconds):" in text else ""
            print(f"\nnew, {run}: {prof}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
