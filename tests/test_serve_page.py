"""The page at GET /: served from package data, its model list (labels, parity figures), and a person's
use of it in a real headless browser (Debian's chromium + chromedriver through selenium): the page
loads, shows the models, and an uploaded photo (file chooser and drag-and-drop) gets the same top
classes as /classify. The browser test skips only when no browser or driver is installed."""

from __future__ import annotations

import json
import os
import shutil

import httpx
import onnx
import pytest
from serve_fixtures import TINY_LABELS, ServerProcess

PARITY = {
    "passed": True,
    "max_abs_diff": 3.1e-06,
    "min_cosine": 0.999999,
    "fp32": {
        "images": 153,
        "top1_agreement": 1.0,
        "max_abs_diff": 2.9e-06,
        "accuracy_reference": 0.9477,
        "accuracy_onnx": 0.9477,
        "reference": "pytorch",
    },
}


@pytest.fixture(scope="module")
def with_parity(tiny_onnx, tmp_path_factory):
    """The tiny model with export's parity summary in its metadata (as `transferzoo export` writes it)."""
    proto = onnx.load(str(tiny_onnx))
    meta = {p.key: p.value for p in proto.metadata_props} | {"parity": json.dumps(PARITY), "precision": "fp32"}
    onnx.helper.set_model_props(proto, meta)
    path = tmp_path_factory.mktemp("page") / "ants.onnx"
    onnx.save(proto, str(path))
    return path


@pytest.fixture(scope="module")
def server(with_parity, lite0_onnx):
    with ServerProcess(with_parity, lite0_onnx, "--threads", "1") as s:
        yield s


def test_page_and_its_model_list(server):
    r = httpx.get(server.url + "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "<title>transferzoo serve</title>" in r.text and 'id="drop"' in r.text
    models = httpx.get(server.url + "/page/models").json()
    assert models["ready"] is True
    by_name = {m["name"]: m for m in models["models"]}
    assert set(by_name) == {"ants", "lite0"}
    ants = by_name["ants"]
    assert ants["labels"] == TINY_LABELS and ants["parity"] == PARITY and ants["classify"] is True
    assert ants["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 64, 64]}]
    assert ants["metadata"]["precision"] == "fp32" and ants["input_size"] == [64, 64]
    assert len(by_name["lite0"]["labels"]) == 1000 and by_name["lite0"]["parity"] is None


def test_model_list_needs_the_key_the_page_does_not(tiny_onnx):
    env = {"SERVE_TEST_KEY": "k3y"}
    with ServerProcess(tiny_onnx, "--api-key-env", "SERVE_TEST_KEY", env=env) as s:
        assert httpx.get(s.url + "/").status_code == 200
        assert httpx.get(s.url + "/page/models").status_code == 401
        r = httpx.get(s.url + "/page/models", headers={"Authorization": "Bearer k3y"})
        assert r.status_code == 200 and r.json()["models"][0]["name"] == "tiny"


def test_page_is_package_data():
    """The wheel ships the page: pyproject's package-data names it and the file is where page.py reads it."""
    import tomllib
    from importlib import resources

    from transferzoo.serve import page

    assert (resources.files("transferzoo.serve") / "static" / "index.html").is_file()
    with open(os.path.join(os.path.dirname(__file__), "..", "pyproject.toml"), "rb") as f:
        data = tomllib.load(f)["tool"]["setuptools"]["package-data"]["transferzoo.serve"]
    assert "static/*.html" in data
    assert "<script>" in page._html()


# --- a real browser -----------------------------------------------------------------------------------


def _browser():
    """(chromium binary, chromedriver) or a skip reason."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None, "selenium is not installed (pip install -e '.[dev]')"
    chrome = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    driver = shutil.which("chromedriver")
    if not chrome or not driver:
        return None, "no chromium/chromedriver on PATH (Debian: apt-get install chromium chromium-driver)"
    return (chrome, driver), None


@pytest.fixture(scope="module")
def browser():
    found, reason = _browser()
    if found is None:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = found[0]
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1200,900"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(found[1]), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _wait(driver, cond, timeout=60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(cond)


def _results(driver) -> list[tuple[str, str]]:
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, "#results tbody tr")
    return [
        (r.find_element(By.CSS_SELECTOR, ".label").text, r.find_element(By.CSS_SELECTOR, ".prob").text) for r in rows
    ]


@pytest.mark.slow
def test_a_person_uploads_a_photo(server, browser, sample_photos, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    d = browser
    d.get(server.url + "/")
    _wait(d, lambda d: d.execute_script("return document.body.dataset.loaded") == "1")
    cards = {c.get_attribute("data-name"): c for c in d.find_elements(By.CSS_SELECTOR, ".model")}
    assert set(cards) == {"ants", "lite0"}
    ants = cards["ants"].text
    assert "ants, bees, wasps" in ants and "3 labels" in ants  # a short list is shown open
    assert "passed" in ants and "153 real images: top-1 agreement 100.00%" in ants and "94.77%" in ants
    assert "1000 labels" in cards["lite0"].text and "no parity figures" in cards["lite0"].text
    assert "ready" in d.find_element(By.ID, "status").text

    # the file chooser: a real photo to the real ImageNet model
    Select(d.find_element(By.ID, "model-select")).select_by_value("lite0")
    photo = sample_photos["coffee"]
    d.find_element(By.ID, "file").send_keys(str(photo))
    _wait(d, lambda d: d.execute_script("return document.body.dataset.state") in ("done", "error"))
    assert d.find_element(By.ID, "error").text == ""
    shown = _results(d)
    want = httpx.post(server.url + "/v2/models/lite0/classify?top_k=5", content=photo.read_bytes()).json()["top"]
    assert [label for label, _ in shown] == [t["label"] for t in want]
    assert shown[0][0] == "espresso"
    assert shown[0][1] == f"{100 * want[0]['probability']:.2f}%"
    assert d.execute_script("return document.getElementById('preview').naturalWidth") > 0  # the image is shown

    # drag and drop: the page's drop handler gets a File, as from a desktop drag
    photo = sample_photos["chelsea"]
    d.execute_script(
        """
        const [b64, name] = arguments;
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], name, { type: "image/png" }));
        document.body.dataset.state = "";
        document.getElementById("drop").dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true }));
        """,
        __import__("base64").b64encode(photo.read_bytes()).decode(),
        photo.name,
    )
    _wait(d, lambda d: d.execute_script("return document.body.dataset.state") in ("done", "error"))
    want = httpx.post(server.url + "/v2/models/lite0/classify?top_k=5", content=photo.read_bytes()).json()["top"]
    assert [label for label, _ in _results(d)] == [t["label"] for t in want]
    assert any("cat" in label for label, _ in _results(d))

    # a bad upload shows the server's error, not a broken page
    bad = tmp_path / "not-an-image.txt"
    bad.write_text("hello")
    d.find_element(By.ID, "file").send_keys(str(bad))
    _wait(d, lambda d: d.execute_script("return document.body.dataset.state") == "error")
    assert d.find_element(By.ID, "error").text.startswith("415")
