"""`transferzoo deploy` (a Triton model repository + KServe manifest from an .onnx file) and `transferzoo serve
REPO`: config.pbtxt read back by protobuf's own text_format parser into Triton's ModelConfig and checked
field by field, the manifest as YAML, and the repository served and queried with tritonclient."""

from __future__ import annotations

import os
import shutil

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as th
import yaml
from serve_fixtures import TINY_LABELS, ServerProcess
from tritonclient.utils import InferenceServerException

from transferzoo.cli import main
from transferzoo.serve import repository
from transferzoo.serve.app import load_models
from transferzoo.serve.config import ServeOptions, ServerConfig


def model_config(path):
    """config.pbtxt through protobuf's text_format into Triton's ModelConfig (tritonclient ships it)."""
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig()), model_config_pb2


def deploy(onnx, repo, *args):
    assert main(["deploy", str(onnx), "--triton-repo", str(repo), *map(str, args)]) == 0
    return repo


def test_deploy_writes_config_labels_model_and_manifest(tmp_path, tiny_onnx):
    repo = deploy(
        tiny_onnx,
        tmp_path / "repo",
        *("--name", "ants", "--instances", 2, "--max-batch", 16, "--queue-delay-us", 2500, "--max-queue", 64),
        *("--cpus", 8, "--kserve-manifest", tmp_path / "isvc.yaml"),
    )
    folder = repo / "ants"
    assert (folder / "1" / "model.onnx").read_bytes() == tiny_onnx.read_bytes()
    assert (folder / "labels.txt").read_text().splitlines() == TINY_LABELS
    cfg, pb = model_config(folder / "config.pbtxt")
    assert cfg.name == "ants" and cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 16
    (inp,), (out,) = cfg.input, cfg.output
    assert (inp.name, inp.data_type, list(inp.dims)) == ("input", pb.TYPE_FP32, [3, 64, 64])  # no batch axis
    assert (out.name, out.data_type, list(out.dims), out.label_filename) == ("logits", pb.TYPE_FP32, [3], "labels.txt")
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 2500
    assert cfg.dynamic_batching.default_queue_policy.max_queue_size == 64
    (group,) = cfg.instance_group
    assert group.count == 2 and group.kind == pb.ModelInstanceGroup.KIND_CPU
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert params == {"intra_op_thread_count": "4", "inter_op_thread_count": "1"}  # 8 cores / 2 instances
    # our reader sees what protobuf sees
    ours = repository.parse_pbtxt((folder / "config.pbtxt").read_text())
    assert repository.first(ours, "max_batch_size") == 16
    assert repository.first(repository.first(ours, "input"), "dims") == 3
    assert repository.first(ours, "input")["dims"] == [3, 64, 64]
    assert repository.parameters(ours) == params

    doc = yaml.safe_load((tmp_path / "isvc.yaml").read_text())
    assert doc["apiVersion"] == "serving.kserve.io/v1beta1" and doc["kind"] == "InferenceService"
    assert doc["metadata"]["name"] == "ants"
    m = doc["spec"]["predictor"]["model"]
    assert m["modelFormat"] == {"name": "onnx"} and m["protocolVersion"] == "v2"
    assert m["storageUri"].startswith("s3://") and "REPO" in m["storageUri"]  # a placeholder to fill in
    assert m["resources"]["requests"]["cpu"] == m["resources"]["limits"]["cpu"] == "8"
    assert m["readinessProbe"]["httpGet"]["path"] == "/v2/models/ants/ready"


@pytest.mark.parametrize(
    "threads, instances, cpus, want",
    [(0, 1, None, os.cpu_count()), (0, 2, 8, 4), (0, 3, 2, 1), (3, 2, 8, 3), (0, 1, 6, 6)],
)
def test_threads_follow_the_servers_rule_on_the_targets_cores(tmp_path, tiny_onnx, threads, instances, cpus, want):
    opts = ServeOptions(threads=threads, instances=instances)
    d = repository.write(tiny_onnx, tmp_path, opts=opts, cpus=cpus)
    cfg, _ = model_config(d.folder / "config.pbtxt")
    assert cfg.parameters["intra_op_thread_count"].string_value == str(want) == str(d.threads)
    # the server's own rule, unchanged: one instance on all cores is onnxruntime's default (0)
    assert ServeOptions(threads=threads, instances=instances).threads_per_run() == (
        threads or (0 if instances == 1 else max(1, os.cpu_count() // instances))
    )


def test_deploy_imports_no_torch(tmp_path, tiny_onnx):
    """deploy runs where serve runs: onnxruntime and the file, no torch."""
    import subprocess
    import sys

    code = (
        "import sys; from transferzoo.cli import main; "
        f"assert main(['deploy', {str(tiny_onnx)!r}, '--triton-repo', {str(tmp_path)!r}]) == 0; "
        "bad = [m for m in ('torch', 'timm', 'onnx') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/", capture_output=True)
    assert (tmp_path / "tiny" / "config.pbtxt").is_file()


def test_a_model_without_a_batch_axis_gets_max_batch_size_0(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
    )
    path = tmp_path / "fixed.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    d = repository.write(path, tmp_path / "repo")
    cfg, _ = model_config(d.folder / "config.pbtxt")
    assert cfg.max_batch_size == 0 and list(cfg.input[0].dims) == [2, 4] and not cfg.HasField("dynamic_batching")
    assert not (d.folder / "labels.txt").exists() and not cfg.output[0].label_filename
    (entry,) = repository.read(tmp_path / "repo")
    assert entry.options.max_batch == 1 and entry.options.max_delay_ms == 0


def test_parse_pbtxt_reads_the_text_format_people_write():
    text = """
    # a hand-written config
    name: 'm'   platform: "onnxruntime_onnx"
    max_batch_size: 4;
    input < name: "a\\"b" data_type: TYPE_FP32 dims: [ -1, 3 ] >
    input { name: "c", dims: 5 dims: 6 }
    optimization { execution_accelerators { cpu_execution_accelerator: [ { name: "openvino" } ] } }
    dynamic_batching { }
    parameters: { key: "x" value: { string_value: "1" "2" } }
    version_policy: { specific: { versions: [1, 3] } }
    ratio: 0.5 flag: true small: 1e-3 big: -2.5E+2
    """
    cfg = repository.parse_pbtxt(text)
    assert repository.first(cfg, "name") == "m" and cfg["max_batch_size"] == [4]
    a, c = cfg["input"]
    assert a["name"] == ['a"b'] and a["dims"] == [-1, 3] and a["data_type"] == ["TYPE_FP32"]
    assert c["dims"] == [5, 6]
    assert cfg["dynamic_batching"] == [{}]
    assert repository.parameters(cfg) == {"x": "12"}
    assert cfg["ratio"] == [0.5] and cfg["flag"] == [True] and cfg["small"] == [1e-3] and cfg["big"] == [-250.0]
    accel = cfg["optimization"][0]["execution_accelerators"][0]["cpu_execution_accelerator"]
    assert accel == [{"name": ["openvino"]}]
    for bad, where in [('name: "m"\ninput {', ":2:"), ("name 'm'", ":1:"), ('name: "m"\n  @', ":2:")]:
        with pytest.raises(ValueError, match=where):
            repository.parse_pbtxt(bad, "config.pbtxt")


def test_serve_reads_the_repositorys_settings(tmp_path, tiny_onnx, tiny_u8_onnx):
    repo = deploy(tiny_onnx, tmp_path / "repo", "--instances", 2, "--max-batch", 4, "--queue-delay-us", 1500)
    deploy(tiny_u8_onnx, repo, "--threads", 1, "--max-queue", 9)
    models = load_models(ServerConfig(models=(str(repo),), max_queue=77))
    assert sorted(models) == ["tiny", "tiny_u8"]
    tiny, u8 = models["tiny"].options, models["tiny_u8"].options
    assert (tiny.instances, tiny.max_batch, tiny.max_delay_ms, tiny.max_queue) == (2, 4, 1.5, 256)
    assert (u8.instances, u8.max_batch, u8.threads, u8.max_queue) == (1, 32, 1, 9)
    # one model folder on its own, and a repository next to a loose file
    assert list(load_models(ServerConfig(models=(str(repo / "tiny"),)))) == ["tiny"]
    both = load_models(ServerConfig(models=(str(repo / "tiny_u8"), f"other={tiny_onnx}")))
    assert sorted(both) == ["other", "tiny_u8"] and both["other"].options is None


def _broken(tmp_path, tiny_onnx, edit):
    repo = deploy(tiny_onnx, tmp_path / "repo", "--threads", 2)
    edit(repo / "tiny")
    return repo


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda f: (f / "labels.txt").write_text("a\nb\nc\n"), "differ from the 3"),
        (lambda f: _sub(f / "config.pbtxt", "KIND_CPU", "KIND_GPU"), "KIND_GPU"),
        (lambda f: _sub(f / "config.pbtxt", "onnxruntime_onnx", "tensorrt_plan"), "onnxruntime_onnx models only"),
        (lambda f: _sub(f / "config.pbtxt", 'name: "tiny"', 'name: "other"'), "differs from its folder"),
        (lambda f: shutil.rmtree(f / "1"), "no version folder"),
        (lambda f: _sub(f / "config.pbtxt", "max_batch_size: 32", "max_batch_size: 99999"), "max_batch"),
        (lambda f: _sub(f / "config.pbtxt", 'string_value: "2"', 'string_value: "two"'), "intra_op_thread_count"),
        (lambda f: _sub(f / "config.pbtxt", "dims: [ 3 ]", "dims: [ 3 "), "config.pbtxt:"),
        (lambda f: _sub(f / "config.pbtxt", "count: 1", "count: KIND_CPU"), "instance_group.count must be"),
    ],
)
def test_a_broken_repository_is_refused_with_the_reason(tmp_path, tiny_onnx, edit, message, capsys):
    repo = _broken(tmp_path, tiny_onnx, edit)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_models(ServerConfig(models=(str(repo),)))
    assert main(["serve", str(repo), "--port", "0"]) == 2  # the CLI: one line, before binding a port
    assert message.split()[0] in capsys.readouterr().err


def _sub(path, old, new):
    text = path.read_text()
    assert old in text, (old, text)
    path.write_text(text.replace(old, new))


def test_an_empty_folder_is_not_a_repository(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a Triton model repository"):
        load_models(ServerConfig(models=(str(tmp_path),)))
    with pytest.raises(ValueError, match="named by their folders"):
        load_models(ServerConfig(models=(f"x={tmp_path}",)))


@pytest.mark.slow
def test_deploy_then_serve_then_tritonclient(tmp_path, tiny_onnx, tiny_u8_onnx):
    """The round trip: the repository `deploy` wrote, served as is, answers like onnxruntime."""
    repo = deploy(tiny_onnx, tmp_path / "repo", "--max-batch", 4, "--instances", 2)
    deploy(tiny_u8_onnx, repo)
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    ref = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    with ServerProcess(repo) as server:
        c = th.InferenceServerClient(server.address)
        assert c.is_model_ready("tiny") and c.is_model_ready("tiny_u8")
        md = c.get_model_metadata("tiny")
        assert md["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 64, 64]}]
        inp = th.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        out = th.InferRequestedOutput("logits", class_count=1)
        result = c.infer("tiny", [inp], outputs=[th.InferRequestedOutput("logits")]).as_numpy("logits")
        np.testing.assert_allclose(result, ref, rtol=1e-5, atol=1e-6)
        top = c.infer("tiny", [inp], outputs=[out]).as_numpy("logits")
        assert [t.decode().split(":")[2] for t in top.ravel()] == [TINY_LABELS[i] for i in ref.argmax(1)]
        big = th.InferInput("input", [5, 3, 64, 64], "FP32")  # over the config's max_batch_size 4
        big.set_data_from_numpy(np.zeros((5, 3, 64, 64), np.float32))
        with pytest.raises(InferenceServerException, match="max"):
            c.infer("tiny", [big])
        assert server.alive()
