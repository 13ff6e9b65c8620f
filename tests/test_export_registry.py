"""Every registry architecture exports and passes fp32 parity (random weights: no weights needed).
Generated from zoo.list_models(), so a new registry entry is covered automatically."""

from __future__ import annotations

import pytest
import torch

from transferzoo import zoo
from transferzoo.export.pipeline import ExportOptions, export
from transferzoo.export.sources import load_zoo

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", zoo.list_models())
def test_registry_model_exports_with_parity(name, tmp_path):
    torch.manual_seed(0)
    torch.set_num_threads(2)
    src = load_zoo(name, random_weights=True)
    res = export(src, ExportOptions(out=tmp_path / "m.onnx", parity_limit=2))
    r = res.report
    assert r["passed"] and res.path.is_file()
    randoms = [c for c in r["fp32"] if c["name"].startswith("random")]
    assert [c["count"] for c in randoms] == [1, 3]  # the dynamic batch axis at two sizes
    assert all(c["max_abs_diff"] <= 1e-4 and c["top1_agreement"] == 1.0 for c in r["fp32"])
    if zoo.get(name).family == "efficientnet-lite":
        assert r["same_padding_convs_frozen"] > 0
