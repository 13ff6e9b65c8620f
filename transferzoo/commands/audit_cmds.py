"""audit: exact and near duplicates (and the leak across splits), likely label errors, outliers."""

from __future__ import annotations

import argparse

from ._common import SettingFlags, print_json, stderr_log


def register(sub: argparse._SubParsersAction) -> None:
    from transferzoo.transfer.config import FitConfig

    from .transfer_cmds import _data_flags

    global AUDIT_FLAGS
    AUDIT_FLAGS = flags = SettingFlags(FitConfig)
    p = sub.add_parser(
        "audit",
        help="find duplicates (and train/val leaks), likely label errors and outliers in an image folder",
    )
    _data_flags(p, flags)
    flags.add(p, "--near-gap", "audit.near_gap", "near-duplicates: how much closer than the next image (0.025)")
    flags.add(p, "--near-min-similarity", "audit.near_min_similarity", "near-duplicates: cosine at least (0.7)")
    flags.add(p, "--near-same-photo", "audit.near_same_photo", "cosine from which a pair is always flagged (0.95)")
    flags.add(p, "--outlier-z", "audit.outlier_z", "robust z-score below -Z is an outlier (4)")
    flags.add(p, "--label-min-margin", "audit.label_min_margin", "label errors: p(suggested) - p(given) above this (0)")
    flags.add(p, "--max-listed", "audit.max_listed", "rows per finding in the text output (50)")
    p.add_argument("--sheet", metavar="PATH.png", help="write a contact sheet of the flagged images")
    p.add_argument("--exclude-list", metavar="FILE", help="write the flagged images as a list for `fit --exclude FILE`")
    p.add_argument(
        "--fail-on",
        choices=("leak", "near-leak"),
        help="exit 1 if val/test images have an exact twin in train (leak), or an exact or near one (near-leak)",
    )
    p.set_defaults(func=cmd_audit)


AUDIT_FLAGS: SettingFlags


def cmd_audit(args) -> int:
    from transferzoo.transfer.audit.exclude import flagged, write_list
    from transferzoo.transfer.audit.run import audit, format_text
    from transferzoo.transfer.config import FitConfig, load_config
    from transferzoo.zoo.fileio import atomic_write

    base = load_config(args.config) if args.config else FitConfig()
    cfg = AUDIT_FLAGS.apply(base, args)
    log = stderr_log(args.json)
    result = audit(args.data, cfg, log=log)
    if args.sheet:
        from transferzoo.transfer.audit.sheet import contact_sheet_png

        atomic_write(args.sheet, contact_sheet_png(result))
        result["sheet"] = str(args.sheet)
    if args.exclude_list:
        write_list(args.exclude_list, flagged(result), header=f"from: transferzoo audit {args.data}")
        result["exclude_list"] = str(args.exclude_list)
    leak = result["leak"]
    failed = False
    if args.fail_on == "leak":
        failed = result["has_leak"]
    elif args.fail_on == "near-leak":
        failed = any(v["exact_twins"] + v["near_twins"] > 0 for v in leak.values())
    result["failed"] = failed
    if args.json:
        print_json(result)
    else:
        print(format_text(result, cfg.audit.max_listed))
        for what in ("sheet", "exclude_list"):
            if what in result:
                print(f"{what.replace('_', ' ')}: {result[what]}")
        if failed:
            print(f"fail-on {args.fail_on}: val/test images have a twin in train (exit 1)")
    return 1 if failed else 0
