"""The shape of the code, checked: one import package, imports pointing one way, one place for each
helper that must exist once (onnxruntime session options, torch -> ONNX, renaming files into place)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# folder -> the package it installs as (pyproject's package-dir)
PACKAGES = {
    "zoo": "transferzoo.zoo",
    "transfer": "transferzoo.transfer",
    "export": "transferzoo.export",
    "serve": "transferzoo.serve",
    "transferzoo": "transferzoo",
}
LAYERS = ("zoo", "export", "transfer", "serve")
CLI_LAYER = ("transferzoo.cli", "transferzoo.commands", "transferzoo.pipeline", "transferzoo.demo")
# what each package may import of the project (besides itself): the layering of README's "Imports point one way"
ALLOWED = {"zoo": set(), "export": {"zoo"}, "transfer": {"zoo", "export"}, "serve": {"zoo"}}


def _sources(folders=tuple(PACKAGES)) -> list[Path]:
    return sorted(p for f in folders for p in (REPO / f).rglob("*.py"))


def _module_of(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    parts[0] = PACKAGES.get(parts[0], parts[0])  # tests/ and bench/ are plain scripts
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in a file, relative ones resolved as installed."""
    mod = _module_of(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                absmod = ".".join(base + ([node.module] if node.module else []))
            else:
                absmod = node.module
            out.append((node.lineno, absmod))
            out += [(node.lineno, f"{absmod}.{a.name}") for a in node.names]  # `from transferzoo import zoo`
    return out


def test_no_bare_imports_of_the_four_packages():
    files = _sources() + sorted((REPO / "tests").glob("*.py")) + sorted((REPO / "bench").glob("*.py"))
    bad = [
        f"{p.relative_to(REPO)}:{line}: import {m}"
        for p in files
        for line, m in _imports(p)
        if m.split(".")[0] in LAYERS
    ]
    assert not bad, "\n".join(bad)


def test_imports_point_one_way():
    bad = []
    for layer in LAYERS:
        for p in _sources((layer,)):
            for line, m in _imports(p):
                parts = m.split(".")
                if parts[0] != "transferzoo" or len(parts) < 2:
                    continue
                other = parts[1]
                if m.startswith(CLI_LAYER) or (other in LAYERS and other != layer and other not in ALLOWED[layer]):
                    bad.append(f"{p.relative_to(REPO)}:{line}: {layer} imports {m}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    "needle, home",
    [
        ("SessionOptions(", "zoo/runtime.py"),
        ("torch.onnx.export(", "export/onnx_export.py"),
        ("os.replace(", "zoo/fileio.py"),
        ("os.rename(", None),
    ],
)
def test_one_place_for_each_helper(needle, home):
    found = sorted(str(p.relative_to(REPO)) for p in _sources() if needle in p.read_text())
    assert found == ([home] if home else []), found


def test_nothing_is_discovered_as_a_plugin():
    found = [str(p.relative_to(REPO)) for p in _sources() if "plugin" in p.read_text().lower()]
    assert not found, found


def test_serve_zoo_and_the_cli_parser_import_without_torch():
    code = (
        "import sys, transferzoo.cli; transferzoo.cli.build_parser(); "
        "bad = [m for m in ('torch', 'timm', 'onnx', 'matplotlib') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")  # `transferzoo --help` starts in a blink
    code = (
        "import sys, transferzoo.zoo, transferzoo.zoo.images, transferzoo.zoo.config, transferzoo.zoo.runtime, "
        "transferzoo.serve.app, transferzoo.serve.server, transferzoo.transfer, transferzoo.transfer.config; "
        "bad = [m for m in ('torch', 'timm', 'matplotlib') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")


@pytest.mark.slow
def test_the_wheel_installs_exactly_one_top_level_package(tmp_path):
    # built from a copy of the tracked files: setuptools writes build/ beside the sources
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, src / f)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("transferzoo-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"transferzoo"}, tops
    # and every source module is in it, under its installed name
    want = {
        _module_of(p).replace(".", "/") + ("/__init__.py" if p.name == "__init__.py" else ".py") for p in _sources()
    }
    missing = sorted(w for w in want if w not in names)
    assert not missing, missing
