"""`transferzoo audit` and its hooks in `plan` / `fit`, through the CLI, on real images (scikit-image's
lfw_subset face / not-face crops and sample photos) with known problems planted in a given split."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferzoo.cli import main
from transferzoo.transfer.features import engine
from transferzoo.transfer.sample_data import write_lfw_subset


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("featcache")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """train/ + val/ of lfw crops (20 + 10 per class) with: a byte copy of a train face in val (leak),
    a same-pixels re-encode of another train face in val (leak, other bytes), a face copied into
    train/not_face (duplicate across classes), 2 faces mislabelled not_face, a photo of coffee
    (outlier), and a near-duplicate of chelsea (resized to 60%, JPEG q50) in val."""
    from skimage import data

    src = write_lfw_subset(tmp_path_factory.mktemp("lfw_src"), per_class=32)
    root = tmp_path_factory.mktemp("planted")
    for cls in ("face", "not_face"):
        files = sorted((src / cls).glob("*.png"))
        for split, part in (("train", files[:20]), ("val", files[20:30])):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for f in part:
                shutil.copyfile(f, root / split / cls / f.name)
    faces = sorted((root / "train" / "face").glob("*.png"))
    shutil.copyfile(faces[0], root / "val" / "face" / "leak_bytes.png")
    Image.open(faces[1]).save(root / "val" / "face" / "leak_pixels.png", compress_level=1)
    shutil.copyfile(faces[2], root / "train" / "not_face" / "cross_class.png")
    spare = sorted((src / "face").glob("*.png"))[30:32]
    for k, f in enumerate(spare):
        shutil.copyfile(f, root / "train" / "not_face" / f"mislabelled{k}.png")
    Image.fromarray(data.coffee()).resize((25, 25)).save(root / "train" / "not_face" / "coffee.png")
    cat = Image.fromarray(data.chelsea())
    cat.save(root / "train" / "not_face" / "chelsea.png")
    cat.resize((int(cat.width * 0.6), int(cat.height * 0.6))).save(
        root / "val" / "not_face" / "chelsea_small.jpg", quality=50
    )
    return root


def _audit(capsys, *args) -> tuple[int, dict]:
    rc = main(["audit", *map(str, args), "--json"])
    return rc, json.loads(capsys.readouterr().out)


def test_audit_finds_planted_problems(planted, cache_dir, tmp_path, capsys):
    sheet, lst = tmp_path / "sheet.png", tmp_path / "exclude.txt"
    rc, r = _audit(
        capsys, planted, "--cache-dir", cache_dir, "--sheet", sheet, "--exclude-list", lst, "--fail-on", "leak"
    )
    assert rc == 1 and r["failed"] and r["has_leak"]  # --fail-on leak: val images have a twin in train
    groups = {frozenset(d["path"] for d in g["members"]): g for g in r["exact_duplicates"]["groups"]}
    faces = sorted(p.name for p in (planted / "train" / "face").glob("*.png"))
    g_bytes = groups[frozenset({f"train/face/{faces[0]}", "val/face/leak_bytes.png"})]
    g_pix = groups[frozenset({f"train/face/{faces[1]}", "val/face/leak_pixels.png"})]
    g_cls = groups[frozenset({f"train/face/{faces[2]}", "train/not_face/cross_class.png"})]
    assert g_bytes["same"] == "bytes" and g_bytes["across_splits"] and not g_bytes["across_classes"]
    assert g_pix["same"] == "pixels" and g_pix["across_splits"]
    assert g_cls["across_classes"] and not g_cls["across_splits"]
    assert len(groups) == 3
    leak = r["leak"]["val"]
    assert (
        leak["exact_twins"] == 2 and leak["images"] == 23 and leak["max_inflation"] == pytest.approx(2 / 23, abs=1e-4)
    )
    near = {(p["a"]["path"], p["b"]["path"]) for p in r["near_duplicates"]["pairs"]}
    assert ("train/not_face/chelsea.png", "val/not_face/chelsea_small.jpg") in near
    assert leak["near_twins"] >= 1  # (lfw's not-face patches hold near-copies of their own)
    labels = {d["path"]: d for d in r["label_issues"]["items"]}
    for k in range(2):
        assert labels[f"train/not_face/mislabelled{k}.png"]["suggested"] == "face"
    assert "train/not_face/coffee.png" in {d["path"] for d in r["outliers"]["items"]}
    # the contact sheet is a real PNG; the list names what fit --exclude leaves out
    with Image.open(sheet) as im:
        assert im.format == "PNG" and im.width > 1000 and im.height > 200
    listed = [line.split("#")[0].strip() for line in lst.read_text().splitlines() if line.split("#")[0].strip()]
    assert {"val/face/leak_bytes.png", "val/face/leak_pixels.png", "train/not_face/mislabelled0.png"} <= set(listed)
    assert f"train/face/{faces[0]}" not in listed  # the train copy of a leak is kept
    # text output, and exit 0 without --fail-on (findings are information)
    assert main(["audit", str(planted), "--cache-dir", str(cache_dir)]) == 0
    out = capsys.readouterr().out
    assert "2 of 23 val images have an exact twin in train" in out and "likely label errors" in out


def test_audit_adds_no_feature_pass_when_cached(planted, cache_dir, capsys, monkeypatch):
    _audit(capsys, planted, "--cache-dir", cache_dir)  # warm (a no-op if the test above ran)
    calls = []
    real = engine.Extractor._compute
    monkeypatch.setattr(
        engine.Extractor, "_compute", lambda self, *a, **k: calls.append(len(a[0])) or real(self, *a, **k)
    )
    rc, r = _audit(capsys, planted, "--cache-dir", cache_dir)
    assert rc == 0 and calls == [] and r["features_pass"] == {"computed_images": 0, "cached_images": r["num_images"]}


def test_plan_and_fit_show_the_audit_and_exclude(planted, cache_dir, tmp_path, capsys):
    conf = tmp_path / "fast.yaml"
    conf.write_text("probe: {cv_folds: 3, cv_repeats: 1, lambdas: [0.1]}\n")
    assert main(["plan", str(planted), "--cache-dir", str(cache_dir), "--config", str(conf)]) == 0
    out = capsys.readouterr().out
    assert "data audit" in out and "2 of 23 val images have an exact twin" in out
    common = ["--strategy", "linear", "--cache-dir", str(cache_dir), "--config", str(conf), "--json"]
    # --exclude-flagged: trains without the flagged images; the run says what was left out
    run = tmp_path / "flagged"
    assert main(["fit", str(planted), *common, "--exclude-flagged", "--out", str(run)]) == 0
    s = json.loads(capsys.readouterr().out)
    ex = (run / "excluded.tsv").read_text().splitlines()
    assert ex[0] == "path\treason" and s["num_excluded"] == len(ex) - 1 >= 5
    left_out = {line.split("\t")[0] for line in ex[1:]}
    assert {"val/face/leak_bytes.png", "val/face/leak_pixels.png", "train/not_face/mislabelled1.png"} <= left_out
    trained = {
        line.split("\t")[0] for f in ("train", "val") for line in (run / "splits" / f"{f}.tsv").read_text().splitlines()
    }
    assert not (left_out & trained) and s["num_val"] == 23 - len([p for p in left_out if p.startswith("val/")])
    report = (run / "report.md").read_text()
    assert "## Data audit" in report and "## Left out of training" in report and "leak_bytes.png" in report
    assert json.loads((run / "audit.json").read_text())["leak"]["val"]["exact_twins"] == 2
    # --exclude FILE: exactly the listed images (the user's edited list)
    lst = tmp_path / "mine.txt"
    lst.write_text("# my list\nval/face/leak_bytes.png  # the copy\n\n/not/in/the/folder.png\n")
    run2 = tmp_path / "listed"
    assert main(["fit", str(planted), *common, "--exclude", str(lst), "--out", str(run2)]) == 0
    s2 = json.loads(capsys.readouterr().out)
    assert s2["num_excluded"] == 1 and s2["num_val"] == 22
    assert (run2 / "excluded.tsv").read_text().splitlines()[1].startswith("val/face/leak_bytes.png\tlisted in ")
    assert main(["fit", str(planted), *common, "--exclude", str(tmp_path / "none.txt")]) == 2
    assert "exclude list" in capsys.readouterr().err


def test_confident_learning_on_known_probabilities():
    from transferzoo.transfer.audit.findings import label_issues

    # class 0 images: p0 ~ 0.9; class 1: p1 ~ 0.8; image 3 is labelled 1 but the probe is sure it is 0
    P = np.array([[0.9, 0.1], [0.95, 0.05], [0.2, 0.8], [0.92, 0.08], [0.15, 0.85], [0.55, 0.45]])
    y = np.array([0, 0, 1, 1, 1, 0])
    issues = label_issues(P, y)
    assert [d["index"] for d in issues] == [3] and issues[0]["suggested"] == 0
    assert issues[0]["score"] == pytest.approx(0.92 - 0.08)


@pytest.mark.slow
@pytest.mark.shared_data
def test_audit_hymenoptera(hymenoptera, tmp_path, capsys):
    rc, r = _audit(capsys, hymenoptera, "--fail-on", "leak", "--sheet", tmp_path / "s.png")
    assert rc == 0 and not r["has_leak"] and r["num_images"] == 398
    # the one file in it that is not a photo of an insect (a "we're sorry, image not found" GIF)
    assert r["outliers"]["items"][0]["path"] == "train/ants/imageNotFound.gif"


@pytest.mark.slow
@pytest.mark.shared_data
def test_audit_flowers_finds_its_real_duplicates(flowers, tmp_path, capsys):
    rc, r = _audit(capsys, flowers, "--sheet", tmp_path / "s.png")
    assert rc == 0 and r["num_images"] > 4000
    assert Path(tmp_path / "s.png").stat().st_size > 10000
    assert r["exact_duplicates"]["groups"], "flowers (Kaggle) holds byte-identical copies"
