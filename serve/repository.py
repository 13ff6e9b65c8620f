"""A Triton model repository, written and read: one layout for `transferzoo serve`, Triton and KServe.

    REPO/NAME/config.pbtxt        platform onnxruntime_onnx, dims without the batch axis, batching, threads
    REPO/NAME/labels.txt          output 0's class names (Triton's classification extension reads it)
    REPO/NAME/1/model.onnx        the ONNX file, unchanged (its metadata still says everything)

`write` builds it from an .onnx file's metadata (export/ONNX_METADATA.md) and the server's own settings
(`ServeOptions`), and writes a KServe InferenceService manifest beside it; `read` turns a repository back
into (name, path, ServeOptions) so `transferzoo serve REPO` runs each model as its config.pbtxt says.
Torch-free (only onnxruntime via `serve.model`), like the rest of serve.

config.pbtxt is protobuf text format (Triton's ModelConfig message). It is parsed here by a small
schema-less reader (`parse_pbtxt`) rather than protobuf + Triton's generated model_config_pb2: serving
must not need tritonclient's gRPC extra, and the reader keeps every field, so a hand-edited config with
fields we do not use still loads. The tests check our output with protobuf's own text_format parser.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path

from transferzoo.zoo.fileio import atomic_commit

from .config import ServeOptions
from .model import Model

CONFIG = "config.pbtxt"
LABELS = "labels.txt"
MODEL_FILE = "model.onnx"  # Triton's default_model_filename for onnxruntime_onnx
ONNX_PLATFORMS = ("onnxruntime_onnx",)
ONNX_BACKENDS = ("onnxruntime",)
KSERVE_HTTP_PORT = 8080  # the port KServe's Triton runtime (and any V2 runtime) serves HTTP on


class Enum(str):
    """A protobuf enum value (written bare: `kind: KIND_CPU`, not quoted)."""


# --- protobuf text format: writer -------------------------------------------------------------


def _scalar(v) -> str:
    if isinstance(v, Enum):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    s = str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{s}"'


def to_pbtxt(fields: list[tuple[str, object]], indent: int = 0) -> str:
    """[(name, value)] -> text format. A value is a scalar, a list of scalars (`dims: [ 3, 64 ]`),
    a message (a list of (name, value) pairs) or a list of messages (`input [ {...}, {...} ]`)."""
    pad, out = "  " * indent, []
    for name, value in fields:
        if isinstance(value, list) and value and isinstance(value[0], list):  # repeated message
            inner = ",\n".join(f"{pad}  {{\n{to_pbtxt(m, indent + 2)}{pad}  }}" for m in value)
            out.append(f"{pad}{name} [\n{inner}\n{pad}]\n")
        elif isinstance(value, list) and value and isinstance(value[0], tuple):  # one message
            out.append(f"{pad}{name} {{\n{to_pbtxt(value, indent + 1)}{pad}}}\n")
        elif isinstance(value, list):
            out.append(f"{pad}{name}: [ {', '.join(_scalar(v) for v in value)} ]\n")
        else:
            out.append(f"{pad}{name}: {_scalar(value)}\n")
    return "".join(out)


# --- protobuf text format: reader -------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s+|\#[^\n]*|(?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')|(?P<punct>[{}\[\]:,;<>])"""
    r"""|(?P<word>[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+|[-+]?[A-Za-z0-9_.]+)"""
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "'": "'", "\\": "\\"}


def _tokens(text: str, path: str) -> list[tuple[str, object, int]]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            line = text.count("\n", 0, pos) + 1
            raise ValueError(f"{path}:{line}: cannot read {text[pos : pos + 20]!r} (protobuf text format expected)")
        line = text.count("\n", 0, pos) + 1
        if m.group("str") is not None:
            body = m.group("str")[1:-1]
            out.append(("str", re.sub(r"\\(.)", lambda e: _ESCAPES.get(e.group(1), e.group(1)), body), line))
        elif m.group("punct") is not None:
            out.append(("punct", m.group("punct"), line))
        elif m.group("word") is not None:
            out.append(("word", m.group("word"), line))
        pos = m.end()
    return out


def _word_value(w: str):
    if w in ("true", "True"):
        return True
    if w in ("false", "False"):
        return False
    try:
        return int(w, 0)
    except ValueError:
        pass
    try:
        return float(w)
    except ValueError:
        return Enum(w)


def parse_pbtxt(text: str, path: str = CONFIG) -> dict[str, list]:
    """Text format -> {field: [values]} (every field a list: the reader knows no schema, so it cannot tell
    a repeated field from a single one); a message is such a dict, a string a str, an enum an `Enum`."""
    toks, i = _tokens(text, path), 0

    def fail(msg: str):
        line = toks[min(i, len(toks) - 1)][2] if toks else 1
        raise ValueError(f"{path}:{line}: {msg}")

    def message(end: str | None) -> dict[str, list]:
        nonlocal i
        fields: dict[str, list] = {}
        while True:
            if i >= len(toks):
                if end is None:
                    return fields
                fail(f"missing {end!r}")
            kind, tok, _ = toks[i]
            if kind == "punct" and tok == end:
                i += 1
                return fields
            if kind != "word":
                fail(f"expected a field name, got {tok!r}")
            i += 1
            colon = i < len(toks) and toks[i][1] == ":" and toks[i][0] == "punct"
            if colon:
                i += 1
            fields.setdefault(tok, []).extend(values(colon))
            if i < len(toks) and toks[i][0] == "punct" and toks[i][1] in ",;":
                i += 1

    def values(colon: bool) -> list:
        nonlocal i
        if i >= len(toks):
            fail("a value is missing at the end")
        kind, tok, _ = toks[i]
        if kind == "punct" and tok in "{<":
            i += 1
            return [message("}" if tok == "{" else ">")]
        if kind == "punct" and tok == "[":
            i += 1
            out = []
            while not (i < len(toks) and toks[i][0] == "punct" and toks[i][1] == "]"):
                out.extend(values(True))
                if i < len(toks) and toks[i][0] == "punct" and toks[i][1] == ",":
                    i += 1
                elif i >= len(toks):
                    fail("missing ']'")
            i += 1
            return out
        if not colon:
            fail(f"expected ':' or '{{' before {tok!r}")
        i += 1
        if kind == "str":  # adjacent strings concatenate, as in protobuf
            s = tok
            while i < len(toks) and toks[i][0] == "str":
                s += toks[i][1]
                i += 1
            return [s]
        if kind == "word":
            return [_word_value(tok)]
        fail(f"unexpected {tok!r}")

    return message(None)


def first(msg: dict, name: str, default=None):
    v = msg.get(name)
    return v[0] if v else default


def parameters(config: dict) -> dict[str, str]:
    """ModelConfig.parameters (a map<string, ModelParameter>) -> {key: string_value}."""
    return {first(p, "key", ""): first(first(p, "value", {}), "string_value", "") for p in config.get("parameters", [])}


# --- write ------------------------------------------------------------------------------------


def triton_dims(shape: tuple[int, ...], batched: bool) -> list[int]:
    """Triton's dims leave the batch axis out when max_batch_size > 0 (its most-asked config error is a
    dims list that keeps it); dynamic dimensions are -1."""
    return list(shape[1:] if batched else shape)


def kserve_name(name: str) -> str:
    """A Kubernetes object name (DNS-1123 label: lowercase letters, digits, '-')."""
    s = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
    return s or "model"


@dataclass(frozen=True)
class Deployment:
    name: str
    folder: Path  # REPO/NAME
    files: tuple[Path, ...]
    manifest: Path
    threads: int


def config_fields(model: Model, opts: ServeOptions, threads: int) -> list[tuple[str, object]]:
    """ModelConfig for one .onnx file: what Triton's onnxruntime backend needs, set as this server sets it."""
    batched = model.batched
    fields: list[tuple[str, object]] = [
        ("name", model.name),
        ("platform", "onnxruntime_onnx"),
        ("max_batch_size", opts.max_batch if batched else 0),
    ]
    for kind, specs in (("input", model.inputs), ("output", model.outputs)):
        msgs = []
        for k, t in enumerate(specs):
            m = [("name", t.name), ("data_type", Enum("TYPE_" + t.datatype)), ("dims", triton_dims(t.shape, batched))]
            if kind == "output" and k == 0 and model.meta.labels is not None:
                m.append(("label_filename", LABELS))
            msgs.append(m)
        fields.append((kind, msgs))
    if batched:  # Triton refuses dynamic batching on a model without a batch axis
        fields.append(
            (
                "dynamic_batching",
                [
                    ("max_queue_delay_microseconds", int(round(opts.max_delay_ms * 1000))),
                    ("default_queue_policy", [("max_queue_size", opts.max_queue)]),
                ],
            )
        )
    fields.append(("instance_group", [[("count", opts.instances), ("kind", Enum("KIND_CPU"))]]))
    # One intra-op pool per instance sized by the server's rule, one inter-op thread (serve: zoo.runtime):
    # left at 0, onnxruntime in a container sizes its pool by the host's cores, not the pod's.
    for key, value in (("intra_op_thread_count", threads), ("inter_op_thread_count", 1)):
        fields.append(("parameters", [("key", key), ("value", [("string_value", str(value))])]))
    return fields


def kserve_manifest(name: str, cpus: int, model_bytes: int) -> str:
    """A KServe InferenceService for the repository (Triton runtime, V2 protocol). The storage URI is a
    placeholder: upload REPO (the folder holding NAME/) and put its address there."""
    import yaml

    # onnxruntime holds the weights about twice (file bytes + optimised graph) plus activations and the
    # runtime itself: request that, limit at twice it.
    mem_mib = 256 + math.ceil(3 * model_bytes / (1 << 20))
    res = {"cpu": str(cpus), "memory": f"{mem_mib}Mi"}
    doc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": kserve_name(name)},
        "spec": {
            "predictor": {
                "model": {
                    "modelFormat": {"name": "onnx"},
                    "protocolVersion": "v2",
                    "runtime": "kserve-tritonserver",
                    "storageUri": "s3://BUCKET/PATH/TO/REPO",
                    "resources": {"requests": res, "limits": {"cpu": str(cpus), "memory": f"{2 * mem_mib}Mi"}},
                    "readinessProbe": {
                        "httpGet": {"path": f"/v2/models/{name}/ready", "port": KSERVE_HTTP_PORT},
                        "initialDelaySeconds": 5,
                        "periodSeconds": 5,
                    },
                }
            }
        },
    }
    head = (
        f"# KServe InferenceService for Triton model repository model {name!r} (written by `transferzoo deploy`).\n"
        "# storageUri: upload the repository folder (the one that holds "
        f"{name}/config.pbtxt) and put its address here.\n"
        f"# cpu matches the threads in config.pbtxt (instances x intra_op_thread_count = {cpus} cores).\n"
    )
    return head + yaml.safe_dump(doc, sort_keys=False)


def write(
    onnx_path: str | os.PathLike,
    repo: str | os.PathLike,
    name: str | None = None,
    opts: ServeOptions | None = None,
    cpus: int | None = None,
    manifest: str | os.PathLike | None = None,
) -> Deployment:
    """REPO/NAME/{config.pbtxt, labels.txt, 1/model.onnx} and the KServe manifest, in one atomic commit.

    Threads follow `transferzoo serve`'s rule (ServeOptions.threads_per_run) with the cores made explicit:
    `cpus` is the target's core count (default: this machine's), divided among the instances."""
    opts = opts or ServeOptions()
    cpus = cpus or os.cpu_count() or 1
    model = Model(onnx_path, name, threads=1)
    if any("\n" in label for label in model.meta.labels or ()):
        raise ValueError(f"{onnx_path}: a label contains a newline, which labels.txt cannot hold")
    threads = opts.threads_per_run(cpus)
    folder = Path(repo) / model.name
    config = to_pbtxt(config_fields(model, opts, threads))
    data = Path(onnx_path).read_bytes()
    manifest = Path(manifest) if manifest else folder / "inferenceservice.yaml"
    files: dict[Path, bytes | str] = {
        folder / CONFIG: config,
        folder / "1" / MODEL_FILE: data,
        manifest: kserve_manifest(model.name, max(cpus, opts.instances * threads), len(data)),
    }
    if model.meta.labels is not None:
        files[folder / LABELS] = "".join(label + "\n" for label in model.meta.labels)
    atomic_commit(files)
    return Deployment(model.name, folder, tuple(files), manifest, threads)


# --- read -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RepoModel:
    name: str
    path: Path  # the .onnx file of the version served
    options: ServeOptions
    labels_file: Path | None


def _model_dir(folder: Path, base: ServeOptions) -> RepoModel:
    cfg_path = folder / CONFIG
    cfg = parse_pbtxt(cfg_path.read_text(encoding="utf-8"), str(cfg_path))
    name = first(cfg, "name", folder.name)
    if name != folder.name:
        raise ValueError(f"{cfg_path}: name {name!r} differs from its folder {folder.name!r} (Triton wants them equal)")
    platform, backend = first(cfg, "platform", ""), first(cfg, "backend", "")
    if platform not in ONNX_PLATFORMS and backend not in ONNX_BACKENDS:
        raise ValueError(
            f"{cfg_path}: platform {platform or '-'!r} / backend {backend or '-'!r}: transferzoo serve runs "
            "onnxruntime_onnx models only"
        )
    filename = first(cfg, "default_model_filename", MODEL_FILE)
    versions = sorted(
        (int(v.name) for v in folder.iterdir() if v.is_dir() and v.name.isdigit() and (v / filename).is_file()),
        reverse=True,
    )
    if not versions:
        raise FileNotFoundError(f"{folder}: no version folder with {filename} (expected {folder}/1/{filename})")
    policy = first(cfg, "version_policy")
    if policy and "specific" in policy:  # serve the newest listed version that exists
        wanted = set(first(policy, "specific", {}).get("versions", []))
        versions = [v for v in versions if v in wanted] or versions

    def integer(msg: dict, key: str, default: int, where: str = "") -> int:
        v = first(msg, key, default)
        if isinstance(v, str) and not isinstance(v, Enum) and v.strip().lstrip("-").isdigit():
            return int(v)  # parameters hold strings
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{cfg_path}: {where}{key} must be an integer, got {v!r}")
        return v

    dyn = first(cfg, "dynamic_batching")
    changes: dict = {"max_batch": max(1, integer(cfg, "max_batch_size", 0))}
    if dyn is not None:
        changes["max_delay_ms"] = integer(dyn, "max_queue_delay_microseconds", 0, "dynamic_batching.") / 1000
        queue = integer(first(dyn, "default_queue_policy", {}), "max_queue_size", 0, "default_queue_policy.")
        if queue:
            changes["max_queue"] = queue
    else:  # no dynamic batching in Triton: a request runs as sent, never joined with others
        changes["max_delay_ms"] = 0.0
    groups = cfg.get("instance_group", [])
    if any(str(first(g, "kind", "KIND_AUTO")) == "KIND_GPU" for g in groups):
        raise ValueError(f"{cfg_path}: instance_group KIND_GPU: transferzoo serve runs on CPU (use KIND_CPU)")
    if groups:
        changes["instances"] = sum(integer(g, "count", 1, "instance_group.") for g in groups)
    params = {"intra_op_thread_count": parameters(cfg).get("intra_op_thread_count", "").strip()}
    if params["intra_op_thread_count"]:
        changes["threads"] = integer({k: [v] for k, v in params.items()}, "intra_op_thread_count", 0, "parameter ")
    try:
        options = replace(base, **changes)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{cfg_path}: {e}") from None
    labels = folder / LABELS
    return RepoModel(name, folder / str(versions[0]) / filename, options, labels if labels.is_file() else None)


def read(path: str | os.PathLike, base: ServeOptions | None = None) -> list[RepoModel]:
    """The models of a repository (or of one model folder), each with its config.pbtxt's batching,
    queue, instances and threads over `base` (the server's settings, for what the config leaves out)."""
    p = Path(path)
    base = ServeOptions(**{f.name: getattr(base, f.name) for f in fields(ServeOptions)}) if base else ServeOptions()
    if (p / CONFIG).is_file():
        return [_model_dir(p, base)]
    models = [_model_dir(c, base) for c in sorted(p.iterdir()) if c.is_dir() and (c / CONFIG).is_file()]
    if not models:
        raise FileNotFoundError(f"{p}: not a Triton model repository (no NAME/{CONFIG} inside)")
    return models


def check_labels(entry: RepoModel, model: Model) -> None:
    """labels.txt and the ONNX metadata must agree: Triton classifies with the first, we with the second."""
    if entry.labels_file is None or model.meta.labels is None:
        return
    lines = entry.labels_file.read_text(encoding="utf-8").splitlines()
    if tuple(lines) != model.meta.labels:
        raise ValueError(
            f"{entry.labels_file}: {len(lines)} labels that differ from the {len(model.meta.labels)} in "
            f"{entry.path}'s metadata; rewrite the folder with `transferzoo deploy`"
        )
