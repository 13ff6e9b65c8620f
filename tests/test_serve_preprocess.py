"""serve's torch-free preprocessing equals timm's eval transform bit for bit; decoding is safe;
metadata is validated; `predict MODEL.onnx` matches the zoo's torch path; serve imports no torch."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import timm
from PIL import Image
from serve_fixtures import REPO

from transferzoo.serve.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from transferzoo.serve.model import Preprocess, parse_metadata
from transferzoo.serve.preprocess import decode_image, to_input

FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")


@pytest.fixture(scope="module")
def photos():
    from skimage import data

    # real photos, plus odd shapes (portrait, tiny, smaller than the crop) to exercise rounding and padding
    out = {n: Image.fromarray(getattr(data, n)()) for n in ("chelsea", "coffee", "astronaut")}
    out["portrait"] = out["coffee"].transpose(Image.Transpose.ROTATE_90).resize((301, 457))
    out["tiny"] = out["chelsea"].resize((37, 23))
    return out


@pytest.mark.parametrize("crop_mode", ["center", "squash", "border"])
@pytest.mark.parametrize(
    "size,interp,crop_pct",
    [
        ((224, 224), "bicubic", 0.875),
        ((64, 64), "bilinear", 0.875),
        ((96, 128), "bilinear", 0.9),
        ((64, 64), "nearest", 1.0),
        ((80, 80), "lanczos", 0.95),
    ],
)
def test_equals_timm_eval_transform(photos, crop_mode, size, interp, crop_pct):
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    pre = Preprocess("float32_nchw", size, mean, std, interp, crop_pct, crop_mode)
    tf = timm.data.create_transform(
        input_size=(3, *size), interpolation=interp, crop_pct=crop_pct, crop_mode=crop_mode, mean=mean, std=std
    )
    for name, img in photos.items():
        ref, ours = tf(img).numpy(), to_input(img, pre)
        assert ours.dtype == np.float32 and ours.shape == ref.shape, name
        np.testing.assert_array_equal(ours, ref, err_msg=name)


def test_uint8_nhwc_is_the_cropped_pixels(photos):
    pre = Preprocess("uint8_nhwc", (64, 64), (0.5,) * 3, (0.5,) * 3, "bilinear", 0.875, "center")
    tf = timm.data.create_transform(
        input_size=(3, 64, 64), interpolation="bilinear", crop_pct=0.875, mean=(0, 0, 0), std=(1, 1, 1)
    )
    x = to_input(photos["chelsea"], pre)
    assert x.dtype == np.uint8 and x.shape == (64, 64, 3)
    np.testing.assert_array_equal(x, np.round(tf(photos["chelsea"]).numpy() * 255).astype(np.uint8).transpose(1, 2, 0))


def _encode(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_decode_modes_and_orientation():
    rgba = Image.new("RGBA", (8, 6), (255, 0, 0, 0))  # fully transparent red -> white, like zoo.images
    assert decode_image(_encode(rgba, "PNG"), 10**6, FORMATS).getpixel((0, 0)) == (255, 255, 255)
    gray = decode_image(_encode(Image.new("L", (5, 5), 77), "PNG"), 10**6, FORMATS)
    assert gray.mode == "RGB" and gray.getpixel((1, 1)) == (77, 77, 77)
    img = Image.new("RGB", (40, 20), (10, 200, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: a phone photo held upright
    assert decode_image(_encode(img, "JPEG", exif=exif), 10**6, FORMATS).size == (20, 40)


def test_decode_refusals():
    png = _encode(Image.new("RGB", (30, 30)), "PNG")
    with pytest.raises(BadRequest):
        decode_image(png[:60], 10**6, FORMATS)  # truncated
    with pytest.raises(PayloadTooLarge, match="over the limit"):
        decode_image(png, 899, FORMATS)  # 900 pixels
    with pytest.raises(UnsupportedMediaType):
        decode_image(png, 10**6, ("JPEG",))  # format not on the allow-list
    with pytest.raises(UnsupportedMediaType):
        decode_image(b"plain text", 10**6, FORMATS)
    with pytest.raises(BadRequest):
        decode_image(b"", 10**6, FORMATS)


def test_metadata_validation():
    good = {
        "labels": json.dumps(["a", "b"]),
        "input_size": "[3, 32, 32]",
        "mean": "[0.5, 0.5, 0.5]",
        "std": "[0.5, 0.5, 0.5]",
        "interpolation": "bicubic",
        "crop_pct": "0.9",
        "crop_mode": "center",
        "input_format": "uint8_nhwc",
    }
    m = parse_metadata(good)
    assert m.labels == ("a", "b") and m.preprocess.size == (32, 32) and m.preprocess.input_format == "uint8_nhwc"
    assert parse_metadata({}).preprocess is None  # a plain ONNX file: infer only
    for key, bad in [
        ("labels", "[1, 2]"),
        ("labels", "not json"),
        ("input_size", "[3, 32]"),
        ("input_size", "[1, 32, 32]"),
        ("mean", "[0.5]"),
        ("std", "[0, 1, 1]"),
        ("interpolation", "magic"),
        ("crop_pct", "x"),
        ("crop_pct", "9"),
        ("crop_mode", "random"),
        ("input_format", "float16_nchw"),
        ("output_format", "scores"),
    ]:
        with pytest.raises(ValueError, match=key):
            parse_metadata({**good, key: bad}, "m.onnx")


def test_predict_onnx_matches_zoo_predict(lite0_onnx, sample_photos, tmp_path):
    from transferzoo.cli import main
    from transferzoo.serve.predict import predict_onnx
    from transferzoo.zoo.predict import predict_images

    paths = [str(p) for p in sample_photos.values()]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really")
    ours = predict_onnx(lite0_onnx, paths + [str(broken), str(tmp_path / "missing.png")], top_k=3)
    ref = [r.to_dict() for r in predict_images("efficientnet_lite0", paths, top_k=3)]
    for o, r in zip(ours, ref):
        assert [t["index"] for t in o["top"]] == [t["index"] for t in r["top"]]
        assert [t["label"] for t in o["top"]] == [t["label"] for t in r["top"]]
        assert [t["probability"] for t in o["top"]] == pytest.approx([t["probability"] for t in r["top"]], abs=1e-4)
    assert "decode" in ours[-2]["error"] and ours[-1]["error"] == "no such file"
    assert main(["predict", str(lite0_onnx), paths[0], "--json"]) == 0
    assert main(["predict", str(lite0_onnx), str(broken)]) == 1  # the per-file error is reported, exit 1


def test_serve_imports_no_torch_timm_or_zoo(tiny_onnx):
    code = (
        "import sys, transferzoo.serve.app, transferzoo.serve.server, transferzoo.serve.predict;"
        f"transferzoo.serve.predict.predict_onnx({str(tiny_onnx)!r}, []);"
        "bad = [m for m in ('torch', 'timm', 'transferzoo.transfer', 'transferzoo.export') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_model_refuses_metadata_that_contradicts_the_graph(tiny_onnx, tmp_path):
    import onnx

    from transferzoo.serve.model import Model

    proto = onnx.load(str(tiny_onnx))
    for key, value, match in [
        ("input_format", "uint8_nhwc", "uint8_nhwc"),
        ("input_size", "[3, 32, 32]", "float32_nchw"),
        ("labels", '["a", "b"]', "2 labels"),
    ]:
        p = onnx.ModelProto()
        p.CopyFrom(proto)
        onnx.helper.set_model_props(p, {**{e.key: e.value for e in proto.metadata_props}, key: value})
        path = tmp_path / f"bad_{key}.onnx"
        onnx.save(p, str(path))
        with pytest.raises(ValueError, match=match):
            Model(path)
    assert Model(tiny_onnx).meta.labels == ("ants", "bees", "wasps")
