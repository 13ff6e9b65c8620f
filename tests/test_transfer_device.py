"""Where features run (`features.device`): the selection and the GPU-vs-CPU check, on the CPU.
The GPU engines themselves run only where CUDA is (bench/bench_features_device.py)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from transferzoo.cli import main
from transferzoo.transfer.config import FeatureConfig, FitConfig
from transferzoo.transfer.features import engine as fe
from transferzoo.zoo.config import from_dict


def test_auto_falls_back_to_the_cpu_with_a_log_line(monkeypatch, caplog):
    monkeypatch.setattr(fe, "cuda_available", lambda: False)
    with caplog.at_level(logging.INFO, logger=fe.__name__):
        assert fe.resolve_device("auto") == "cpu"
    assert "no CUDA device visible" in caplog.text
    assert fe.resolve_device("cpu") == "cpu"
    with pytest.raises(RuntimeError, match="--device cpu"):
        fe.resolve_device("cuda")
    monkeypatch.setattr(fe, "cuda_available", lambda: True)
    assert fe.resolve_device("auto") == "cuda" and fe.resolve_device("cuda") == "cuda"
    assert fe.resolve_device("cpu") == "cpu"  # asked for: the GPU stays unused


def test_device_setting_is_validated(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"features\.device"):
        from_dict(FitConfig, {"features": {"device": "gpu"}})
    assert from_dict(FitConfig, {"features": {"device": "cuda"}}).features.device == "cuda"
    with pytest.raises(SystemExit) as e:
        main(["plan", str(tmp_path), "--device", "gpu"])
    assert e.value.code == 2 and "invalid choice: 'gpu'" in capsys.readouterr().err


def test_extractor_on_a_machine_without_cuda(monkeypatch, tmp_path):
    monkeypatch.setattr(fe, "cuda_available", lambda: False)
    ex = fe.Extractor("efficientnet_lite0", FeatureConfig(cache_dir=str(tmp_path)), progress=False)
    assert ex.device == "cpu"
    with pytest.raises(RuntimeError, match="no CUDA device"):
        fe.Extractor("efficientnet_lite0", FeatureConfig(cache_dir=str(tmp_path), device="cuda"), progress=False)


class _Engine:
    def __init__(self, name, fn):
        self.name, self.fn = name, fn

    def __call__(self, x):
        return self.fn(x)


def test_gpu_engine_is_used_only_if_it_matches_the_cpu():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    cpu = _Engine("onnxruntime", lambda x: [x.mean(axis=(2, 3)) * 10, x.max(axis=(2, 3))])
    close = _Engine("torch-cuda-bf16", lambda x: [o * (1 + 2**-8) for o in cpu(x)])  # bf16-sized error
    info: dict = {}
    assert fe.checked_gpu_engine(cpu, close, x, info) is close
    assert info["gpu_engine"] == "torch-cuda-bf16" and 0 < info["gpu_max_rel_diff"] < fe.GPU_CHECK_TOL
    wrong = _Engine("torch-cuda-bf16", lambda x: [o + 1.0 for o in cpu(x)])
    info = {}
    assert (
        fe.checked_gpu_engine(cpu, wrong, x, info) is cpu and "max relative difference" in info["gpu_fallback_reason"]
    )

    def boom(x):
        raise RuntimeError("CUDA error: out of memory")

    info = {}
    assert fe.checked_gpu_engine(cpu, _Engine("onnxruntime-cuda", boom), x, info) is cpu
    assert "out of memory" in info["gpu_fallback_reason"]
