"""The real pipeline: `transferzoo export` writes the ONNX files (plain and --with-preprocessing),
`transferzoo serve` serves them; answers equal onnxruntime run directly and the zoo's own predict."""

from __future__ import annotations

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as th
from serve_fixtures import ServerProcess


@pytest.mark.slow
def test_exported_models_served_end_to_end(tmp_path, sample_photos):
    from transferzoo.cli import main
    from transferzoo.zoo.predict import predict_images

    plain, u8 = tmp_path / "lite0.onnx", tmp_path / "lite0_u8.onnx"
    assert main(["export", "efficientnet_lite0", "--out", str(plain), "--threads", "1"]) == 0
    assert main(["export", "efficientnet_lite0", "--out", str(u8), "--with-preprocessing", "--threads", "1"]) == 0
    ref = {
        p.name: r.to_dict()
        for p, r in zip(
            sample_photos.values(), predict_images("efficientnet_lite0", list(sample_photos.values()), top_k=3)
        )
    }
    with ServerProcess(plain, u8, "--threads", "1") as s:
        c = th.InferenceServerClient(s.address)
        assert c.get_model_metadata("lite0_u8")["inputs"][0] == {
            "name": "input",
            "datatype": "UINT8",
            "shape": [-1, 224, 224, 3],
        }
        for model in ("lite0", "lite0_u8"):
            for path in sample_photos.values():
                top = httpx.post(f"{s.url}/v2/models/{model}/classify?top_k=3", content=path.read_bytes()).json()["top"]
                want = ref[path.name]["top"]
                assert [t["index"] for t in top] == [t["index"] for t in want], (model, path.name)
                assert [t["probability"] for t in top] == pytest.approx([t["probability"] for t in want], abs=1e-3)
        x = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
        inp = th.InferInput("input", list(x.shape), "UINT8")
        inp.set_data_from_numpy(x)
        got = c.infer("lite0_u8", [inp]).as_numpy("logits")
        np.testing.assert_allclose(got, ort.InferenceSession(str(u8)).run(None, {"input": x})[0], rtol=1e-5, atol=1e-5)
