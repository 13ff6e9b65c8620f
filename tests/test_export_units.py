"""Fast unit tests of export's parts: parity numbers and tolerances, atomic writes, image sets and
preprocessing, options, TF-same padding freeze, metadata keys vs the documented contract."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from transferzoo import zoo
from transferzoo.export import images, metadata, parity
from transferzoo.export.pipeline import ExportOptions
from transferzoo.export.static_padding import freeze_same_padding
from transferzoo.zoo.fileio import atomic_commit

REPO = Path(__file__).resolve().parents[1]


def test_compare_numbers_and_fp32_gate():
    ref = np.array([[1.0, 2.0, 0.5], [3.0, -1.0, 0.0]], dtype=np.float32)
    ok = parity.compare("x", ref, ref + 5e-5, parity.FP32, labels=np.array([1, 0]))
    assert ok.passed and ok.top1_agreement == 1.0 and ok.accuracy_onnx == ok.accuracy_reference == 1.0
    assert ok.max_abs_diff == pytest.approx(5e-5, rel=1e-2) and ok.min_cosine > 0.9999
    bad = parity.compare("x", ref, ref + 2e-4, parity.FP32)
    assert not bad.passed and "max abs diff" in bad.failures[0]
    flipped = ref.copy()
    flipped[0] = [2.0, 1.0, 0.5]
    c = parity.compare("x", ref, flipped, parity.FP32)
    assert c.top1_agreement == 0.5 and any("top-1 agreement 50.00%" in f for f in c.failures)


def test_compare_nan_and_shape_mismatch_fail():
    ref = np.zeros((2, 3), np.float32)
    assert not parity.compare("x", ref, np.full((2, 3), np.nan, np.float32), parity.FP32).passed
    assert not parity.compare("x", ref, np.zeros((2, 4), np.float32), parity.FP32).passed


def test_int8_gate_uses_accuracy_drop_and_agreement():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((100, 2)).astype(np.float32)
    labels = ref.argmax(1)  # reference is 100 % right
    q = ref.copy()
    q[:1] = q[:1, ::-1]  # one flip: 99 % agreement, 1 point drop -> passes (limits are inclusive)
    assert parity.compare("real images", ref, q, parity.INT8, labels).passed
    q[:2] = ref[:2, ::-1]  # two flips: 98 % agreement but a 2 point drop -> fails on accuracy
    c = parity.compare("real images", ref, q, parity.INT8, labels)
    assert not c.passed and any("accuracy drop" in f for f in c.failures)


def test_atomic_commit_writes_all_or_nothing(tmp_path):
    existing = tmp_path / "model.onnx"
    existing.write_bytes(b"old")
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("file")
    with pytest.raises(OSError):
        atomic_commit({existing: b"new", blocker / "report.json": b"{}"})
    assert existing.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "not_a_dir"]  # no temp files left
    atomic_commit({existing: b"new", tmp_path / "r.json": b"{}"})
    assert existing.read_bytes() == b"new" and (tmp_path / "r.json").read_bytes() == b"{}"


def test_folder_labels_only_when_subfolders_are_the_classes(tmp_path, sample_photos):
    import shutil

    for cls, photo in (("cat", "chelsea"), ("cup", "coffee")):
        (tmp_path / "lab" / cls).mkdir(parents=True)
        shutil.copy(sample_photos[photo], tmp_path / "lab" / cls / f"{photo}.png")
    (tmp_path / "lab" / "cup" / "broken.jpg").write_bytes(b"not a jpeg")
    s = images.from_folder(tmp_path / "lab", ["cup", "cat"])
    assert s.labels is not None and sorted(zip(s.names, s.labels)) == [
        ("cat/chelsea.png", 1),
        ("cup/broken.jpg", 0),
        ("cup/coffee.png", 0),
    ]
    unl = images.from_folder(tmp_path / "lab", ["ants", "bees"])
    assert unl.labels is None and len(unl) == 3
    pre = zoo.preprocessing("efficientnet_lite0")
    b = images.prepare(s, pre)
    assert b.uint8.shape == (2, 224, 224, 3) and b.float.shape == (2, 3, 224, 224)
    assert [d["path"].endswith("broken.jpg") for d in b.skipped] == [True]
    assert b.labels.tolist() == [1, 0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(zoo.ZooError, match="no images"):
        images.from_folder(tmp_path / "empty")
    with pytest.raises(zoo.ZooError, match="not found"):
        images.from_folder(tmp_path / "missing")


def test_preprocessing_is_bit_identical_to_timms_eval_transform(sample_photos):
    import timm.data

    for name in ("efficientnet_lite0", "resnet50", "convnext_nano"):
        pre = zoo.preprocessing(name)
        tf = timm.data.create_transform(**{k: v for k, v in pre.to_dict().items()})
        b = images.prepare(images.from_folder(sample_photos["chelsea"].parent), pre)
        expected = np.stack([tf(zoo.load_rgb(sample_photos[n.split(".")[0]])).numpy() for n in b.names])
        np.testing.assert_array_equal(b.float, expected)


def test_subset_spreads_over_classes():
    s = images.ImageSet("x", list(range(10)), [str(i) for i in range(10)], [0] * 5 + [1] * 5)
    sub = s.subset(4)
    assert len(sub) == 4 and set(sub.labels) == {0, 1}
    assert s.subset(None) is s and s.subset(50) is s


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"out": "m.txt"}, "out: must end in .onnx"),
        ({"out": "m.onnx", "opset": 9}, r"opset: expected 13\.\.20, got 9"),
        ({"out": "m.onnx", "quantize": "int4"}, "quantize: expected one of null, 'int8' or 'fp16', got 'int4'"),
        ({"out": "m.onnx", "exporter": "tf"}, "exporter: expected one of 'auto', 'torchscript' or 'dynamo'"),
        ({"out": "m.onnx", "calibration": "/"}, "calibration: only applies"),
        ({"out": "m.onnx", "parity_limit": 0}, "parity_limit: expected >= 1, got 0"),
    ],
)
def test_options_are_validated(kw, msg):
    with pytest.raises(ValueError, match=msg):
        ExportOptions(**kw)


def test_option_paths_are_checked_where_used_and_flags_are_named(tmp_path, capsys):
    from transferzoo.cli import main

    with pytest.raises(ValueError, match="parity_data: /nonexistent: not a directory"):
        ExportOptions(out="m.onnx", parity_data="/nonexistent").check_paths()
    assert main(["export", "efficientnet_lite0", "--out", str(tmp_path / "m.onnx"), "--opset", "9"]) == 2
    assert "--opset: expected 13..20, got 9" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_same_padding_freeze_is_exact_and_static():
    import timm.layers
    from timm.layers.conv2d_same import Conv2dSame

    with timm.layers.set_layer_config(exportable=True):
        model = zoo.create("efficientnet_lite0", pretrained=False).eval()
    frozen, n = freeze_same_padding(model, (3, 224, 224))
    assert n == 5 and not any(isinstance(m, Conv2dSame) for m in frozen.modules())
    assert any(isinstance(m, Conv2dSame) for m in model.modules())  # the original is untouched
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), model(x), rtol=0, atol=0)
    plain = zoo.create("resnet18", pretrained=False)
    assert freeze_same_padding(plain, (3, 224, 224)) == (plain, 0)


def _documented_keys() -> list[str]:
    text = (REPO / "export" / "ONNX_METADATA.md").read_text()
    keys = []
    for row in re.findall(r"^\| (`[^|]+`) \|", text, flags=re.M):
        keys += re.findall(r"`([^`]+)`", row)
    return keys


def test_metadata_has_every_documented_key_and_nothing_undocumented():
    from export_helpers import module_source, tiny_net

    src = module_source(tiny_net())
    meta = metadata.build(src, input_format="float32_nchw", exporter="torchscript", parity={"passed": True}, opset=18)
    documented = _documented_keys()
    assert "labels" in documented and "weights_sha256" in documented
    assert set(documented) - {"ensemble_members"} <= set(meta), set(documented) - set(meta)
    assert set(meta) <= set(documented), set(meta) - set(documented)
    assert all(isinstance(v, str) for v in meta.values())


def test_int8_keeps_the_head_after_the_last_global_pooling_float():
    from onnx import helper

    from transferzoo.export.quantize import head_nodes

    def node(op, i, o, name):
        return helper.make_node(op, i, o, name=name)

    # conv -> squeeze-excite pool (mid-network) -> mul -> conv -> head pool -> flatten -> gemm -> softmax
    nodes = [
        node("Conv", ["x", "w"], ["c1"], "conv1"),
        node("GlobalAveragePool", ["c1"], ["se"], "se_pool"),
        node("Mul", ["c1", "se"], ["m"], "se_mul"),
        node("Conv", ["m", "w2"], ["c2"], "conv2"),
        node("GlobalAveragePool", ["c2"], ["p"], "head_pool"),
        node("Flatten", ["p"], ["f"], "flatten"),
        node("Gemm", ["f", "wh", "bh"], ["logits"], "fc"),
        node("Softmax", ["logits"], ["probs"], "softmax"),
        node("Identity", ["c2"], ["features"], "side_output"),  # after the pool in order, not fed by it
    ]
    graph = helper.make_graph(nodes, "g", [], [])
    assert head_nodes(graph) == ["flatten", "fc", "softmax"]
    assert head_nodes(helper.make_graph(nodes[:1], "g", [], [])) == []


def test_int8_weight_bits_follow_the_cpus_int8_dot_product():
    from transferzoo.export import quantize

    # AVX2 only: u8 x s8 pairs are summed in int16 and saturate with 8-bit weights -> 7 bits
    assert quantize.int8_weight_bits({"sse4_2", "avx2", "fma"}) == 7
    assert quantize.int8_weight_bits(set()) == 7  # unknown CPU: the safe choice
    for flag in ("avx512_vnni", "avx_vnni", "amx_int8"):  # int32 accumulation: all 8 bits
        assert quantize.int8_weight_bits({"avx2", flag}) == 8
    assert quantize.int8_weight_bits() in (7, 8) and isinstance(quantize.cpu_flags(), set)
    with pytest.raises(ValueError, match="weight_bits must be 7 or 8"):
        quantize.quantize_int8(None, np.zeros((1, 3, 8, 8), np.float32), weight_bits=6)


def _tiny_fp32_and_calibration():
    from export_helpers import tiny_net

    from transferzoo.export.onnx_export import to_onnx

    fp32 = to_onnx(tiny_net(), torch.zeros(1, 3, 32, 32))  # stem 3 -> 8, conv 8 -> 16, pool, linear
    return fp32, np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)


def test_int8_stem_channel_padding_keeps_the_float_outputs():
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from transferzoo.export.quantize import pad_stem_channels

    fp32, x = _tiny_fp32_and_calibration()
    padded = onnx.ModelProto()
    padded.CopyFrom(fp32)
    stem = pad_stem_channels(padded.graph)
    conv = next(n for n in padded.graph.node if n.name == stem)
    w = next(t for t in padded.graph.initializer if t.name == conv.input[1])
    assert list(w.dims)[:2] == [8, 4] and not numpy_helper.to_array(w)[:, 3].any()
    assert next(n for n in padded.graph.node if conv.input[0] in n.output).op_type == "Pad"
    onnx.checker.check_model(padded)

    def run(m):
        s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return s.run(None, {s.get_inputs()[0].name: x})[0]

    np.testing.assert_allclose(run(padded), run(fp32), rtol=1e-5, atol=1e-6)
    assert pad_stem_channels(padded.graph) is None  # 4 channels now: nothing to do


def test_int8_session_onnxruntime_builds_runs_both_convs_int8_and_the_head_float(tmp_path):
    """What onnxruntime runs, not only what the file says (its WeightBiasQuantization pass gives a
    float Conv / Gemm between a DequantizeLinear and a QuantizeLinear int8 weights at session load)."""
    import onnx
    import onnxruntime as ort

    from transferzoo.export import quantize

    fp32, calib = _tiny_fp32_and_calibration()
    ref = ort.InferenceSession(fp32.SerializeToString(), providers=["CPUExecutionProvider"])
    name = ref.get_inputs()[0].name

    def session_graph(pad_stem: bool) -> onnx.GraphProto:
        q = quantize.quantize_int8(fp32, calib, weight_bits=8, pad_stem=pad_stem)
        so = ort.SessionOptions()
        so.optimized_model_filepath = str(tmp_path / f"session_{pad_stem}.onnx")
        sess = ort.InferenceSession(q.SerializeToString(), so, providers=["CPUExecutionProvider"])
        assert np.abs(sess.run(None, {name: calib[:2]})[0] - ref.run(None, {name: calib[:2]})[0]).max() < 0.1
        return onnx.load(so.optimized_model_filepath).graph

    g = session_graph(pad_stem=True)
    ops = [n.op_type for n in g.node]
    assert ops.count("QLinearConv") == 2 and "Pad" in ops, ops
    stem = next(n for n in g.node if n.op_type == "QLinearConv")
    stem_w = next(t for t in g.initializer if t.name == stem.input[3])
    assert stem_w.dims[1] == 4 and stem_w.data_type == onnx.TensorProto.INT8
    floats = {t.name for t in g.initializer if t.data_type == onnx.TensorProto.FLOAT}
    gemm = next(n for n in g.node if n.op_type in ("Gemm", "FusedGemm"))
    assert gemm.input[1] in floats  # the head stays float
    assert "Pad" not in [n.op_type for n in session_graph(pad_stem=False).node]
