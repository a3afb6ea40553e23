import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

from hggt.io import read_parquet, write_png
from hggt.labels import LabelValidationError
from hggt.stages import build_dataset

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "hggt_release" / "Train"
SUBSET = "0-20193"
VERSIONS = ("original", "01", "02", "03", "04")
P, S, N = "Positive", "Similar", "Negative"

# Derived by hand from the votes in tests/fixtures/hggt_release/README.md:
# group → (effective labels 01..04, vote counts, n_pos, n_neg, keep_pos, keep_posneg)
EXPECTED = {
    "0001-586-1469": ((P, P, P, P), (3, 2, 2, 3), 4, 0, True, True),
    "0802-0-288": ((S, N, S, P), (1, 2, 3, 2), 1, 1, True, True),
    "img-with-dash-32-64": ((N, N, S, S), (3, 2, 2, 1), 0, 2, False, True),
    "0005-288-0": ((S, S, S, S), (3, 1, 2, 2), 0, 0, False, False),
    "0003-16-8": ((P, P, P, N), (2, 3, 2, 2), 3, 1, True, True),
}


def _images(folder, groups=tuple(EXPECTED)):
    rng = np.random.default_rng(0)
    for gid in groups:
        for v in VERSIONS:
            name = f"{gid}.png" if v == "original" else f"{gid}_{v}.png"
            write_png(folder / v / name, rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))


def _release(tmp_path, copy=False):
    """A release root: the committed label tree (linked, or copied to be broken) + PNGs."""
    root = tmp_path / "HGGT" / "Train"
    root.mkdir(parents=True)
    if copy:
        shutil.copytree(FIXTURE / "labels", root / "labels")
    else:
        (root / "labels").symlink_to(FIXTURE / "labels", target_is_directory=True)
    _images(root / "images" / SUBSET)
    return root


def _params(params, root, source="hggt_release", subset=SUBSET, test_groups=1, min_pos=2):
    return dataclasses.replace(
        params,
        labels=dataclasses.replace(params.labels, source=source, root=str(root), subset=subset),
        build_dataset=dataclasses.replace(
            params.build_dataset, test_groups=test_groups, min_test_positives=min_pos
        ),
    )


def _tree(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _run(p, out, patches=Path("no-patches-needed")):
    # "${labels.root}" exactly as dvc.yaml and DEPS write it: the stage resolves it from params.
    return build_dataset.run(
        p, {"patches": patches, "labels": Path("${labels.root}")}, {"dataset": out}
    )


def test_release_fixture_goes_through(tmp_path, params):
    root = _release(tmp_path)
    before = _tree(FIXTURE)
    out = tmp_path / "06_dataset"
    summary = _run(_params(params, root), out)
    assert _tree(FIXTURE) == before  # the release is read in place, never modified
    assert sorted(p.name for p in root.iterdir()) == ["images", "labels"]

    groups = read_parquet(out / "groups.parquet").set_index("group_id")
    assert sorted(groups.index) == sorted(EXPECTED)
    for gid, (labels, votes, n_pos, n_neg, kp, kpn) in EXPECTED.items():
        g = groups.loc[gid]
        assert tuple(g[f"label_{v}"] for v in VERSIONS[1:]) == labels, gid
        assert tuple(int(g[f"votes_{v}"]) for v in VERSIONS[1:]) == votes, gid
        assert (g.n_pos, g.n_neg, g.keep_pos, g.keep_posneg) == (n_pos, n_neg, kp, kpn), gid
        for v in VERSIONS:
            name = f"{gid}.png" if v == "original" else f"{gid}_{v}.png"
            assert g[f"path_{v}"] == (root / "images" / SUBSET / v / name).as_posix()
    assert (
        groups.loc["img-with-dash-32-64", ["image", "row", "col"]] == ["img-with-dash", 32, 64]
    ).all()
    assert set(groups.source) == {"hggt_release"} and set(groups.subset) == {SUBSET}
    # Test split: 1 group among the two with ≥ 2 effective positives.
    test = list(groups.index[groups.split == "test"])
    assert len(test) == 1 and test[0] in {"0001-586-1469", "0003-16-8"}
    assert (groups.split == "train").sum() == 4
    assert summary["test_qualifying"] == 2 and "test_note" not in summary

    # Counted by hand from EXPECTED: 8 P, 8 S, 4 N; ties in 0802/01, img/04, 0005/02.
    assert (summary["effective_positive"], summary["effective_similar"]) == (8, 8)
    assert (summary["effective_negative"], summary["ties"]) == (4, 3)
    assert (summary["keep_pos"], summary["keep_posneg"], summary["groups"]) == (3, 4, 5)
    assert summary["label_source"] == "hggt_release" and "label_note" not in summary

    raw = read_parquet(out / "labels_raw.parquet")
    assert len(raw) == 5 * 3 * 4
    first = raw[(raw.group_id == "0001-586-1469") & (raw.annotator == "A") & (raw.slot == "01")]
    assert first.t_start.iloc[0] == pd.Timestamp("2022-08-05 16:56:06")
    assert first.t_end.iloc[0] == pd.Timestamp("2022-08-05 16:56:49")
    assert int(first.duration_s.iloc[0]) == 42  # Total as written, not End − Start (43)
    assert raw.display_pos.isna().all() and not raw.is_control.any()
    assert set(raw.source) == {"hggt_release"}
    c03 = raw[(raw.group_id == "0802-0-288") & (raw.annotator == "C")].set_index("slot").label
    assert list(c03) == [N, S, S, S]  # C/0802-0-288.json, written by hand

    # Agreement in agreement.json equals statsmodels on the same votes.
    stats = json.loads((out / "agreement.json").read_text())
    table = raw.pivot_table(
        index=["group_id", "slot"], columns="annotator", values="label_code", aggfunc="first"
    )
    expected = fleiss_kappa(aggregate_raters(table.to_numpy())[0])
    assert stats["fleiss_kappa"] == pytest.approx(expected, abs=1e-6)
    assert (
        stats["votes"] == {lab: int((raw.label == lab).sum()) for lab in (P, S, N)}
        and sum(stats["votes"].values()) == 60
    )


def test_groups_schema_contract(tmp_path, params):
    out = tmp_path / "06_dataset"
    _run(_params(params, _release(tmp_path)), out)
    groups = read_parquet(out / "groups.parquet")
    required = {
        "group_id": "str",
        "source": "str",
        "image": "str",
        "row": "int32",
        "col": "int32",
        "split": "str",
        **{f"path_{v}": "str" for v in VERSIONS},
        **{f"label_{v}": "str" for v in VERSIONS[1:]},
        **{f"votes_{v}": "int8" for v in VERSIONS[1:]},
        "n_pos": "int8",
        "n_neg": "int8",
        "keep_pos": "bool",
        "keep_posneg": "bool",
    }
    for col, dtype in required.items():
        assert col in groups.columns, col
        if dtype == "str":
            assert groups[col].map(type).eq(str).all(), col
        else:
            assert str(groups[col].dtype) == dtype, col
    assert set(groups.split) <= {"train", "test"}
    assert set(groups[[f"label_{v}" for v in VERSIONS[1:]]].to_numpy().ravel()) <= {P, S, N}


# ----------------------------------------------------------------------------- bad inputs


def _edit(path, fn):
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def _bad_json(root):
    f = root / "labels" / SUBSET / "A" / "0802-0-288.json"
    f.write_text(f.read_text()[:-5])
    return f, "not valid JSON"


def _missing_picture(root):
    f = root / "labels" / SUBSET / "B" / "0003-16-8.json"
    _edit(f, lambda d: d.pop("Picture_3"))
    return f, "missing Picture_3"


def _unknown_label(root):
    f = root / "labels" / SUBSET / "C" / "0005-288-0.json"
    _edit(f, lambda d: d["Picture_4"].update(Label="Great"))
    return f, "Picture_4 has unknown label 'Great'"


def _other_groups_file(root):
    folder = root / "labels" / SUBSET / "A"
    f = folder / "img-with-dash-32-64.json"
    shutil.copy(folder / "0005-288-0.json", f)
    return f, "Picture_1.Name is '0005-288-0.png', expected 'img-with-dash-32-64.png'"


def _version_mixup(root):
    f = root / "labels" / SUBSET / "B" / "0001-586-1469.json"
    _edit(f, lambda d: d["Picture_4"].update(File="02"))
    return f, "Picture_4.File is '02', expected '03'"


def _too_few_annotators(root):
    (root / "labels" / SUBSET / "C" / "0003-16-8.json").unlink()
    f = root / "labels" / SUBSET / "*" / "0003-16-8.json"
    return f, "group 0003-16-8 has 2 annotator file(s) (A, B), labels.annotators is 3"


def _too_many_annotators(root):
    folder = root / "labels" / SUBSET
    (folder / "D").mkdir()
    shutil.copy(folder / "A" / "0802-0-288.json", folder / "D" / "0802-0-288.json")
    return (
        folder / "*" / "0802-0-288.json",
        "group 0802-0-288 has 4 annotator file(s) (A, B, C, D), labels.annotators is 3",
    )


def _duplicate_annotator(root):
    folder = root / "labels" / SUBSET
    (folder / "a").mkdir()
    f = folder / "a" / "0001-586-1469.json"
    shutil.copy(folder / "A" / "0001-586-1469.json", f)
    return f, "duplicate annotator A for group 0001-586-1469"


def _missing_image(root):
    f = root / "images" / SUBSET / "03" / "0802-0-288_03.png"
    f.unlink()
    return f, "missing image of group 0802-0-288"


def _bad_group_name(root):
    folder = root / "labels" / SUBSET
    for slot in "ABC":
        shutil.copy(folder / slot / "0005-288-0.json", folder / slot / "no_position.json")
    return folder / "B" / "no_position.json", "group name 'no_position' is not <image>-<row>-<col>"


def _marked_proxy(root):
    f = root / "labels" / SUBSET / "C" / "0001-586-1469.json"
    _edit(f, lambda d: d.update(Source="proxy"))
    return f, "marked \"Source\": 'proxy' but labels.source is 'hggt_release'"


BREAKS = [
    _bad_json,
    _missing_picture,
    _unknown_label,
    _other_groups_file,
    _version_mixup,
    _too_few_annotators,
    _too_many_annotators,
    _duplicate_annotator,
    _missing_image,
    _bad_group_name,
    _marked_proxy,
]


def _expect_refusal(p, out, expected):
    """Run on bad input: every (file, reason) is in the error, and ``out`` is untouched."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "groups.parquet").write_bytes(b"previous run")
    before = _tree(out)
    with pytest.raises(LabelValidationError) as info:
        _run(p, out)
    assert _tree(out) == before
    assert sorted(x.name for x in out.parent.iterdir() if x.name.startswith(".")) == []
    message = str(info.value)
    for path, reason in expected:
        assert any(str(path) in line and reason in line for line in info.value.problems), (
            f"{path}: {reason} not in\n{message}"
        )
        assert f"{path}: " in message
    return info.value.problems


@pytest.mark.parametrize("brk", BREAKS, ids=lambda f: f.__name__.strip("_"))
def test_each_malformed_kind_stops_the_stage(tmp_path, params, brk):
    root = _release(tmp_path, copy=True)
    path, reason = brk(root)
    _expect_refusal(_params(params, root), tmp_path / "out" / "06_dataset", [(path, reason)])


def test_all_problems_are_listed_at_once(tmp_path, params):
    root = _release(tmp_path, copy=True)
    expected = [brk(root) for brk in BREAKS if brk is not _other_groups_file]
    problems = _expect_refusal(_params(params, root), tmp_path / "out" / "06_dataset", expected)
    assert len(problems) >= len(expected)


def test_proxy_source_refuses_unmarked_labels(tmp_path, params):
    # Human-looking labels presented as proxy: every file lacks the marker.
    labels = tmp_path / "05_labels" / "default"
    shutil.copytree(FIXTURE / "labels" / SUBSET, labels)
    patches = tmp_path / "04_patches"
    _images(patches)
    p = _params(params, tmp_path / "05_labels", source="proxy", subset="default")
    with pytest.raises(LabelValidationError) as info:
        _run(p, tmp_path / "06", patches)
    assert len(info.value.problems) == 15
    assert all('not marked "Source": "proxy"' in x for x in info.value.problems)
    empty = tmp_path / "empty"
    (empty / "default").mkdir(parents=True)
    with pytest.raises(LabelValidationError, match="no label files"):
        _run(_params(params, empty, source="proxy", subset="default"), tmp_path / "06", patches)
    assert not (tmp_path / "06").exists()


# ----------------------------------------------------------------------------- tool export


def _tool_export(tmp_path, sidecar_rows):
    export = tmp_path / "export"
    shutil.copytree(FIXTURE / "labels" / SUBSET, export / "study")
    lines = ["group_id,slot_letter,annotator_id,display_perm", *sidecar_rows]
    (export / "study" / "annotators.csv").write_text("\n".join(lines) + "\n")
    patches = tmp_path / "04_patches"
    _images(patches)
    return export, patches


def test_tool_export_with_sidecar(tmp_path, params):
    rows = [
        f"{gid},{slot},ann{i}-{slot},03|01|04|02"
        for i, gid in enumerate(EXPECTED)
        for slot in "ABC"
    ]
    export, patches = _tool_export(tmp_path, rows)
    out = tmp_path / "06_dataset"
    summary = _run(_params(params, export, source="tool", subset="study"), out, patches)
    assert summary["label_source"] == "tool" and summary["groups"] == 5
    groups = read_parquet(out / "groups.parquet")
    assert set(groups.source) == {"tool"}
    gid = "0802-0-288"
    row = groups.set_index("group_id").loc[gid]
    assert row.path_02 == (patches / "02" / f"{gid}_02.png").as_posix()
    raw = read_parquet(out / "labels_raw.parquet")
    one = raw[(raw.group_id == gid) & (raw.annotator_slot == "B")].set_index("slot")
    assert set(one.annotator) == {"ann1-B"}
    # "03|01|04|02": position 0 shows 03, 1 shows 01, 2 shows 04, 3 shows 02.
    assert one.display_pos.to_dict() == {"01": 1, "02": 3, "03": 0, "04": 2}


def test_tool_sidecar_duplicate_annotator(tmp_path, params):
    rows = [f"{gid},{slot},ann-{slot},03|01|04|02" for gid in EXPECTED for slot in "ABC"]
    rows[-1] = "0003-16-8,C,ann-A,01|02|03|04"  # the same person in slots A and C
    export, patches = _tool_export(tmp_path, rows)
    with pytest.raises(LabelValidationError) as info:
        _run(_params(params, export, source="tool", subset="study"), tmp_path / "06", patches)
    assert len(info.value.problems) == 1
    assert "study/C/0003-16-8.json: duplicate annotator 'ann-A' in group 0003-16-8" in str(
        info.value
    )


# ----------------------------------------------------------------------------- split


def test_split_shortfall_is_reported_and_empty_train_is_an_error(tmp_path, params):
    root = _release(tmp_path)
    out = tmp_path / "06_dataset"
    summary = _run(_params(params, root, test_groups=4, min_pos=2), out)
    assert (summary["test"], summary["train"], summary["test_qualifying"]) == (2, 3, 2)
    assert "only 2 group(s) have ≥2 effective positives" in summary["test_note"]
    groups = read_parquet(out / "groups.parquet")
    assert sorted(groups.group_id[groups.split == "test"]) == ["0001-586-1469", "0003-16-8"]
    before = _tree(out)
    with pytest.raises(ValueError, match="train split would be empty"):
        _run(_params(params, root, test_groups=5, min_pos=0), out)
    assert _tree(out) == before


def test_rebuild_is_byte_identical(tmp_path, params):
    root = _release(tmp_path)
    p = _params(params, root)
    _run(p, tmp_path / "a")
    _run(p, tmp_path / "b")
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
