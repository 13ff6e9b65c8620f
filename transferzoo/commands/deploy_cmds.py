"""deploy: an exported .onnx file -> a Triton model repository (config.pbtxt, labels.txt, 1/model.onnx) and
a KServe InferenceService manifest, which `transferzoo serve DIR`, Triton and KServe all run.

A command of its own rather than `export --triton-repo`: it needs only the .onnx file (torch-free, like
serve), so a file exported earlier, elsewhere, or by another tool deploys without re-exporting."""

from __future__ import annotations

import argparse

from ._common import SettingFlags

DEPLOY_FLAGS: SettingFlags  # bound in register()


def register(sub: argparse._SubParsersAction) -> None:
    from transferzoo.serve.config import ServeOptions

    global DEPLOY_FLAGS
    DEPLOY_FLAGS = flags = SettingFlags(ServeOptions)
    p = sub.add_parser(
        "deploy",
        help="write a Triton model repository + KServe manifest for an .onnx file",
        description="Write TRITON_REPO/NAME/config.pbtxt (onnxruntime_onnx, dims without the batch axis, dynamic "
        "batching, CPU instances and onnxruntime threads set as `transferzoo serve` sets them), labels.txt, "
        "1/model.onnx and a KServe InferenceService manifest, all from the file's metadata. "
        "`transferzoo serve TRITON_REPO` serves the same folder.",
    )
    p.add_argument("onnx", metavar="MODEL.onnx", help="an exported model (transferzoo export)")
    p.add_argument("--triton-repo", required=True, metavar="DIR", help="the model repository folder (created)")
    p.add_argument("--name", help="model name (default: the file's stem)")
    flags.add(p, "--max-batch", "max_batch", "max_batch_size: most rows per run (default 32)")
    p.add_argument(
        "--queue-delay-us", type=int, help="dynamic batching max_queue_delay_microseconds (default 5000, as serve)"
    )
    flags.add(p, "--max-queue", "max_queue", "queued requests before refusing (default 256)")
    flags.add(p, "--instances", "instances", "instance_group count, KIND_CPU (default 1)")
    flags.add(p, "--threads", "threads", "intra_op_thread_count per instance (default: --cpus / --instances)")
    p.add_argument("--cpus", type=int, help="cores of the machine or pod that will serve (default: this machine's)")
    p.add_argument(
        "--kserve-manifest", metavar="PATH", help="where to write the InferenceService (default DIR/NAME/...yaml)"
    )
    p.set_defaults(func=cmd_deploy)


def cmd_deploy(args) -> int:
    from transferzoo.serve import repository
    from transferzoo.serve.config import ServeOptions

    if args.cpus is not None and args.cpus < 1:
        raise ValueError(f"--cpus must be >= 1, got {args.cpus}")
    if args.queue_delay_us is not None and args.queue_delay_us < 0:
        raise ValueError(f"--queue-delay-us must be >= 0, got {args.queue_delay_us}")
    extra = {"max_delay_ms": args.queue_delay_us / 1000} if args.queue_delay_us is not None else None
    opts = DEPLOY_FLAGS.apply(ServeOptions(), args, extra)
    d = repository.write(args.onnx, args.triton_repo, args.name, opts, args.cpus, args.kserve_manifest)
    for f in d.files:
        print(f"wrote {f}")
    print(
        f"model {d.name!r}: {opts.instances} instance(s) x {d.threads} thread(s); serve it with "
        f"`transferzoo serve {args.triton_repo}` or tritonserver --model-repository {args.triton_repo}"
    )
    return 0
