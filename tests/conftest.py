"""Shared fixtures. Tests never touch the network: HF_HUB_OFFLINE is set before anything imports
huggingface_hub, so a missing weight source fails fast and clearly instead of hanging."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFERZOO_OFFLINE", "1")
# Feature caches and exported feature models go to a per-session folder, not the user's ~/.cache
# (CLI subprocesses inherit it).
if "TRANSFERZOO_CACHE" not in os.environ:
    import atexit
    import shutil
    import tempfile

    _cache = tempfile.mkdtemp(prefix="transferzoo-test-cache-")
    os.environ["TRANSFERZOO_CACHE"] = _cache
    atexit.register(shutil.rmtree, _cache, True)

import pytest

# shared fixtures (ONNX files for the serve tests, training runs for the export tests)
pytest_plugins = ["serve_fixtures", "export_helpers"]

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(os.environ.get("TRANSFERZOO_SHARED", REPO.parent / "shared" / "datasets"))


def shared_dataset(name: str) -> Path:
    """A dataset from ../shared/datasets, or skip: on a user's machine that folder is absent."""
    path = SHARED_DATASETS / name
    if not path.is_dir():
        pytest.skip(f"shared dataset {name!r} not found at {path} (only present on the project's machines)")
    return path


@pytest.fixture(scope="session")
def hymenoptera() -> Path:
    return shared_dataset("hymenoptera")


@pytest.fixture(scope="session")
def flowers() -> Path:
    return shared_dataset("flowers")


@pytest.fixture(scope="session")
def sample_photos(tmp_path_factory) -> dict[str, Path]:
    """scikit-image's real sample photos written as PNG files: {'chelsea': path, 'coffee': path, ...}."""
    from PIL import Image
    from skimage import data

    out = tmp_path_factory.mktemp("photos")
    paths = {}
    for name in ("chelsea", "coffee", "astronaut"):
        paths[name] = out / f"{name}.png"
        Image.fromarray(getattr(data, name)()).save(paths[name])
    return paths


@pytest.fixture(scope="session")
def lite0():
    """efficientnet_lite0 with its real ImageNet weights (from the installed weight package), eval mode."""
    from transferzoo import zoo

    return zoo.create("efficientnet_lite0").eval()
