"""`mgkit prepare waterbirds-build`: Waterbirds from tiny CUB-200-2011 and Places365 trees in their real layouts."""

from __future__ import annotations

import csv
import dataclasses
import json

import h5py
import numpy as np
import pytest
from PIL import Image

from fixtures import expected_boxes, prepare_json, run_cli, stored_ids, write_jpeg
from mgkit.data.format import open_dataset
from mgkit.data.sources import waterbirds_build as wb
from mgkit.data.sources.waterbirds import GROUP_NAMES

S = 24
SPLITS = ("train", "val", "test")
# CUB class folder -> waterbird? (written out by hand from the recipe's list; Western_Meadowlark contains "tern")
CUB_CLASSES = {"001.Black_footed_Albatross": 1, "059.California_Gull": 1, "014.Indigo_Bunting": 0,
               "026.Bronzed_Cowbird": 0, "088.Western_Meadowlark": 1}
SIZES = [(40, 30), (30, 40), (36, 36), (44, 28)]
PLACES = {"land": ["bamboo_forest", "forest/broadleaf"], "water": ["ocean", "lake/natural"]}
PER_CATEGORY = 14


def _mask(width: int, height: int, n: int) -> np.ndarray:
    """A grey CUB-like mask: a solid block of 255 with a soft (51, 153) rim, offset by n; image 0 of a class has
    one lone 51 pixel in a corner, which the box must include."""
    m = np.zeros((height, width), np.uint8)
    x0, y0 = 3 + n % 5, 2 + n % 4
    x1, y1 = width - 4 - n % 3, height - 3 - n % 6
    m[y0 - 1:y1 + 1, x0 - 1:x1 + 1] = 51
    m[y0:y1, x0:x1] = 153
    m[y0 + 1:y1 - 1, x0 + 1:x1 - 1] = 255
    if n % 7 == 0:
        m[height - 1, width - 1] = 51
    return m


def make_cub(base, n_per_class: int = 6) -> tuple:
    """CUB_200_2011 (images.txt, image_class_labels.txt, classes.txt, train_test_split.txt, bounding_boxes.txt,
    images/) with segmentations/ beside it, as the two archives unpack. Returns (cub root, {path: (y, is_train)})."""
    cub = base / "CUB_200_2011"
    segs = base / "segmentations"
    images, labels, splits, boxes, info = [], [], [], [], {}
    img_id = 0
    for c, (folder, y) in enumerate(CUB_CLASSES.items(), start=1):
        for k in range(n_per_class):
            img_id += 1
            w, h = SIZES[(img_id + c) % len(SIZES)]
            path = f"{folder}/{folder.split('.', 1)[1]}_{k:04d}_{1000 + img_id}.jpg"
            write_jpeg(cub / "images" / path, w, h, seed=img_id)
            (segs / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(_mask(w, h, img_id)).save(segs / path.replace(".jpg", ".png"))
            is_train = int(k < 4)
            images.append(f"{img_id} {path}")
            labels.append(f"{img_id} {c}")
            splits.append(f"{img_id} {is_train}")
            boxes.append(f"{img_id} 1.0 1.0 10.0 10.0")
            info[path] = (y, bool(is_train))
    (cub / "images.txt").write_text("\n".join(images) + "\n")
    (cub / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (cub / "classes.txt").write_text("".join(f"{c} {f}\n" for c, f in enumerate(CUB_CLASSES, start=1)))
    (cub / "train_test_split.txt").write_text("\n".join(splits[::-1]) + "\n")  # order must not matter
    (cub / "bounding_boxes.txt").write_text("\n".join(boxes) + "\n")
    return cub, info


def make_places(base, layout: str = "data_large", per_category: int = PER_CATEGORY, size=(48, 40)):
    """Places365 tree: <base>/places365/<layout>/<letter>/<category>/<8 digits>.jpg."""
    root = base / "places365"
    n = 0
    for kind, categories in PLACES.items():
        for category in categories:
            for k in range(per_category):
                n += 1
                write_jpeg(root / layout / category[0] / category / f"{k + 1:08d}.jpg", *size, seed=500 + n)
    return root


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    base = tmp_path_factory.mktemp("wbb")
    cub, info = make_cub(base)
    return cub, make_places(base), info


def _build(inputs, out, *extra):
    cub, places, _ = inputs
    return prepare_json("waterbirds-build", "--cub-root", cub, "--places-root", places, "--out", out, "--size", S,
                        *extra)


def _expected_place_counts(ys: list[int], split: str, corr: float) -> dict[int, int]:
    """Per bird type, how many images get water: round(f × n) with the recipe's f."""
    out = {}
    for y in (0, 1):
        n = sum(1 for v in ys if v == y)
        frac = (corr if y else 1 - corr) if split == "train" else 0.5
        out[y] = int(np.round(frac * n))
    return out


@pytest.mark.parametrize("corr", [1.0, 0.75])
def test_group_counts_follow_the_recipe(inputs, tmp_path, corr):
    _, _, info = inputs
    out = tmp_path / "wb.h5"
    _build(inputs, out, "--correlation", corr)
    n_train = sum(1 for _, t in info.values() if t)
    with open_dataset(out) as f:
        assert f.source == "waterbirds" and f.classes == ["landbird", "waterbird"] and f.mask_mode == "inside"
        ids = {s: stored_ids(f, s) for s in SPLITS}
        assert len(ids["val"]) == int(np.round(0.2 * n_train))
        assert sorted(ids["train"] + ids["val"]) == sorted(p for p, (_, t) in info.items() if t)
        assert sorted(ids["test"]) == sorted(p for p, (_, t) in info.items() if not t)
        for split in SPLITS:
            g = f.split(split)
            assert json.loads(g.attrs["group_names"]) == GROUP_NAMES
            ys = [info[p][0] for p in ids[split]]
            groups = g["groups"][:]
            np.testing.assert_array_equal(groups // 2, ys)
            np.testing.assert_array_equal(g["labels"][:, 1], ys)
            water = {y: int(sum(1 for yy, gg in zip(ys, groups) if yy == y and gg % 2)) for y in (0, 1)}
            assert water == _expected_place_counts(ys, split, corr), split
        if corr == 1.0:  # Waterbirds-100: no minority group in train
            assert set(f.split("train")["groups"][:].tolist()) <= {0, 3}


def test_boxes_are_the_pasted_masks(inputs, tmp_path):
    cub, _, _ = inputs
    out = tmp_path / "wb.h5"
    _build(inputs, out)
    segs = cub.parent / "segmentations"
    with open_dataset(out) as f:
        for split in SPLITS:
            g = f.split(split)
            for i, path in enumerate(stored_ids(f, split)):
                m = np.asarray(Image.open(segs / path.replace(".jpg", ".png")))
                h, w = m.shape
                # Brute force: scan every pixel for the extent of the non-zero mask.
                xs = [x for yy in range(h) for x in range(w) if m[yy, x] > 0]
                ys = [yy for yy in range(h) for x in range(w) if m[yy, x] > 0]
                label = int(g["labels"][i, 1])
                box = (label, min(xs), min(ys), max(xs) + 1, max(ys) + 1)
                np.testing.assert_array_equal(f.boxes_of(split, i), expected_boxes([box], w, h, S), err_msg=path)
            assert g["annotated"][:].all()


def test_composite_pixels(tmp_path):
    """A background of the bird image's size is pasted unchanged; the blend is bird·m + bg·(1−m), rounded once."""
    cub, _ = make_cub(tmp_path, n_per_class=1)
    places = make_places(tmp_path, per_category=2)
    plan, _ = wb.plan(cub, places_root=places, val_frac=0.0)
    records = [rec for recs in plan.splits.values() for rec in recs]
    assert len(records) == len(CUB_CLASSES)
    for k, rec in enumerate(records):
        bird = np.asarray(Image.open(rec.payload.image).convert("RGB"), dtype=np.float64)
        # A background the bird's size: the centre crop is the whole image, so no resample happens.
        bg_path = write_jpeg(tmp_path / "bg" / f"{k}.jpg", bird.shape[1], bird.shape[0], seed=900 + k)
        rec = dataclasses.replace(rec, payload=dataclasses.replace(rec.payload, background=str(bg_path)))
        bg = np.asarray(Image.open(bg_path).convert("RGB"), dtype=np.float64)
        m = np.asarray(Image.open(rec.payload.segmentation), dtype=np.float64)[..., None] / 255
        full = np.rint(bird * m + bg * (1 - m)).astype(np.uint8)
        expected = np.asarray(Image.fromarray(full).resize((S, S), Image.BILINEAR))
        np.testing.assert_array_equal(wb.load(rec, S).image, expected)


def test_fit_background_is_the_centre_crop():
    """A 60x20 background with a bright middle third: its 20x20 centre crop is exactly that third."""
    a = np.zeros((20, 60, 3), np.uint8)
    a[:, 20:40] = 200
    fit = wb.fit_background(Image.fromarray(a), (20, 20))
    np.testing.assert_array_equal(np.asarray(fit), np.full((20, 20, 3), 200))
    tall = np.zeros((90, 30, 3), np.uint8)
    tall[30:60] = 77
    fit = wb.fit_background(Image.fromarray(tall), (30, 30))
    np.testing.assert_array_equal(np.asarray(fit), np.full((30, 30, 3), 77))
    # Upscaling: a 16x8 background, dark left half, bright right half, to 8x16 (W, H): the crop is the
    # middle 4 columns, so the result is dark on the left and bright on the right (Lanczos rings a little).
    half = np.zeros((8, 16, 3), np.uint8)
    half[:, 8:] = 200
    up = np.asarray(wb.fit_background(Image.fromarray(half), (8, 16)), dtype=int)
    assert up.shape == (16, 8, 3) and up[:, :3].max() < 60 and up[:, 5:].min() > 140


def test_composite_is_the_rounded_alpha_blend():
    """Every mask value 0..255 against random pixels: round(bird·m/255 + bg·(1 − m/255)), in float64."""
    rng = np.random.default_rng(0)
    bird, bg = (rng.integers(0, 256, (256, 40, 3), dtype=np.uint8) for _ in range(2))
    m = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 40, axis=1)
    got = np.asarray(wb.composite(Image.fromarray(bird), Image.fromarray(m), Image.fromarray(bg)))
    a = m[..., None] / 255.0
    np.testing.assert_array_equal(got, np.rint(bird * a + bg * (1 - a)).astype(np.uint8))


def test_waterbird_species_list():
    assert wb.is_waterbird("086.Pacific_Loon/a.jpg") and wb.is_waterbird("046.Gadwall/a.jpg")
    for quirk in ("021.Eastern_Towhee", "088.Western_Meadowlark", "102.Western_Wood_Pewee"):
        assert wb.is_waterbird(f"{quirk}/a.jpg")  # the recipe matches substrings ("tern")
    assert not wb.is_waterbird("014.Indigo_Bunting/a.jpg") and not wb.is_waterbird("131.Vesper_Sparrow/a.jpg")


def _contents(path) -> dict:
    """Every dataset and attribute of an HDF5 file, without the build time and host."""
    out = {}
    with h5py.File(path, "r") as h:
        for k, v in h.attrs.items():
            if k == "provenance":
                v = {kk: vv for kk, vv in json.loads(v).items() if kk not in ("created", "host")}
            out[k] = v
        h.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def test_same_seed_same_file_and_workers_agree(inputs, tmp_path):
    _build(inputs, tmp_path / "a.h5", "--seed", 3, "--bbox-frac", 0.5)
    _build(inputs, tmp_path / "b.h5", "--seed", 3, "--bbox-frac", 0.5, "--workers", 2)
    _build(inputs, tmp_path / "c.h5", "--seed", 4, "--bbox-frac", 0.5)
    a, b, c = (_contents(tmp_path / n) for n in ("a.h5", "b.h5", "c.h5"))
    assert a.keys() == b.keys()
    for k in a:
        if k != "options":  # options record --workers
            np.testing.assert_equal(a[k], b[k], err_msg=k)
    assert a["provenance"]["metadata_sha256"] != c["provenance"]["metadata_sha256"]
    with open_dataset(tmp_path / "a.h5") as f:
        n = f.split("train")["annotated"].shape[0]
        assert f.split("train")["annotated"][:].sum() == int(0.5 * n)


def test_place_task_and_export_round_trip(inputs, tmp_path):
    cub, _, _ = inputs
    out, export = tmp_path / "wb.h5", tmp_path / "export"
    _build(inputs, out, "--task", "place", "--export", export, "--correlation", 0.75)
    with open(export / "metadata.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0].keys()) == list(wb.METADATA_COLUMNS)
    assert all(r["place_filename"].startswith(("/b/bamboo_forest/", "/f/forest/broadleaf/", "/o/ocean/",
                                                "/l/lake/natural/")) for r in rows)
    land = ("/b/", "/f/")
    assert all((r["place"] == "0") == r["place_filename"].startswith(land) for r in rows)
    assert len({r["place_filename"] for r in rows}) == len(rows)  # each background used once
    res = run_cli("prepare", "waterbirds-build", "--cub-root", cub, "--places-root", inputs[1], "--export", export,
                  "--out", tmp_path / "other.h5", "-q")
    assert res.exit_code == 1 and str(export / "metadata.csv") in res.stderr and "--force" in res.stderr
    again = tmp_path / "again.h5"
    prepare_json("waterbirds", "--root", export, "--cub-root", cub, "--out", again, "--size", S, "--task", "place")
    with open_dataset(out) as f, open_dataset(again) as g:
        assert f.mask_mode == "outside" and f.classes == ["land", "water"]
        for split in SPLITS:
            assert stored_ids(f, split) == stored_ids(g, split)
            np.testing.assert_array_equal(f.split(split)["groups"][:], g.split(split)["groups"][:])
            np.testing.assert_array_equal(f.split(split)["labels"][:], g.split(split)["labels"][:])
            np.testing.assert_array_equal(f.split(split)["labels"][:, 1], f.split(split)["groups"][:] % 2)
            diff = np.abs(f.split(split)["images"][:].astype(int) - g.split(split)["images"][:].astype(int))
            assert diff.mean() < 4  # only the export's JPEG compression differs


def test_places_256_layout_and_explicit_folders(inputs, tmp_path):
    cub, _, _ = inputs
    root = make_places(tmp_path, layout="data_256", size=(32, 32))
    a = prepare_json("waterbirds-build", "--cub-root", cub, "--places-root", root, "--out", tmp_path / "a.h5",
                     "--size", S)
    dirs = []
    for kind, cats in PLACES.items():
        for c in cats:
            dirs += [f"--{kind}-dir", root / "data_256" / c[0] / c]
    b = prepare_json("waterbirds-build", "--cub-root", cub, *dirs, "--out", tmp_path / "b.h5", "--size", S)
    assert a["splits"] == b["splits"]
    c = prepare_json("waterbirds-build", "--cub-root", cub, "--places-root", root / "data_256",
                     "--out", tmp_path / "c.h5", "--size", S)  # the layout folder itself
    assert c["splits"] == a["splits"]
    with open_dataset(tmp_path / "a.h5") as f, open_dataset(tmp_path / "b.h5") as g:
        np.testing.assert_array_equal(f.split("train")["images"][:], g.split("train")["images"][:])
        assert f.provenance["land_folders"][1].endswith("data_256/f/forest/broadleaf")


def _fails(args, code, *needles):
    res = run_cli("prepare", "waterbirds-build", *args, "-q")
    assert res.exit_code == code, (res.stdout, res.stderr)
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    for needle in needles:
        assert str(needle) in res.stderr, res.stderr
    return res


def test_missing_inputs_are_named(tmp_path):
    cub, _ = make_cub(tmp_path, n_per_class=2)
    places = make_places(tmp_path, per_category=3)
    out = tmp_path / "wb.h5"
    base = ["--cub-root", cub, "--places-root", places, "--out", out]
    missing = places / "data_large" / "l" / "lake" / "natural"
    for p in missing.iterdir():
        p.unlink()
    missing.rmdir()
    _fails(base, 1, missing, "lake/natural")
    _fails(base[:2] + ["--out", out], 2, "--places-root")
    _fails(base + ["--water-category", "ocean", "--land-category", "swamp"], 1, places / "data_large" / "s" / "swamp")
    _fails(base + ["--water-category", "ocean", "--segmentations", tmp_path / "nosegs"], 1, tmp_path / "nosegs")
    _fails(["--cub-root", tmp_path / "nocub", "--places-root", places, "--out", out], 1, tmp_path / "nocub")
    _fails(base + ["--water-category", "ocean", "--task", "sky"], 2, "--task")
    (cub / "train_test_split.txt").unlink()
    _fails(base + ["--water-category", "ocean"], 1, cub / "train_test_split.txt")
    assert not out.exists()


def test_too_few_backgrounds_and_missing_mask(tmp_path):
    cub, info = make_cub(tmp_path, n_per_class=2)
    places = make_places(tmp_path, per_category=1)
    out = tmp_path / "wb.h5"
    _fails(["--cub-root", cub, "--places-root", places, "--out", out], 1, "not enough", "backgrounds")
    places = make_places(tmp_path / "more", per_category=6)
    seg = cub.parent / "segmentations" / next(iter(info)).replace(".jpg", ".png")
    seg.unlink()
    _fails(["--cub-root", cub, "--places-root", places, "--out", out], 1, seg)
    assert not out.exists()
    export = tmp_path / "export"
    summary = prepare_json("waterbirds-build", "--cub-root", cub, "--places-root", places, "--out", out,
                           "--size", S, "--skip-bad", "--export", export)
    assert sum(s["skipped"] for s in summary["splits"].values()) == 1
    with open(export / "metadata.csv", newline="") as fh:
        names = [r["img_filename"] for r in csv.DictReader(fh)]
    assert len(names) == len(info) - 1 and next(iter(info)) not in names
