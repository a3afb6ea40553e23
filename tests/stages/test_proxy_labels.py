import dataclasses
import json

import cv2
import numpy as np
import pandas as pd
import pytest

from hggt.io import read_parquet, write_parquet, write_png
from hggt.labels import LabelValidationError, parse_label_file
from hggt.stages import build_dataset, proxy_labels

P, S, N = "Positive", "Similar", "Negative"
GROUPS = [f"photo-{r}-{c}" for r in (0, 40) for c in (0, 40, 80)] + ["with-dash-1-2"]


def _patches(root, size=48):
    """Synthetic ``04_patches``: per group an original with edges and flat areas, and versions
    01 blurred, 02 sharpened, 03 identical, 04 with added noise."""
    for k, gid in enumerate(GROUPS):
        rng = np.random.default_rng(k)
        blocks = rng.uniform(60, 190, (size // 6, size // 6, 3))
        orig = cv2.GaussianBlur(
            cv2.resize(blocks, (size, size), interpolation=cv2.INTER_NEAREST), (0, 0), 0.8
        )
        orig[: size // 4] = 120.0
        x = np.clip(np.rint(orig), 0, 255)
        versions = {
            "original": x,
            "01": cv2.GaussianBlur(x, (0, 0), 1.5),
            "02": x + 0.8 * (x - cv2.GaussianBlur(x, (0, 0), 1.0)),
            "03": x,
            "04": x + rng.normal(0, 8, x.shape),
        }
        for v, img in versions.items():
            name = f"{gid}.png" if v == "original" else f"{gid}_{v}.png"
            write_png(root / v / name, np.clip(np.rint(img), 0, 255).astype(np.uint8))
    write_parquet(root / "patches.parquet", pd.DataFrame({"group_id": GROUPS[::-1]}))
    return root


@pytest.fixture
def patches(tmp_path):
    return _patches(tmp_path / "04_patches")


def _params(params, **labels):
    return dataclasses.replace(
        params,
        executor=dataclasses.replace(params.executor, workers=1),
        labels=dataclasses.replace(params.labels, **labels),
    )


def _tree(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_release_format_marked_proxy_and_deterministic(tmp_path, params, patches):
    p = _params(params)
    a, b = tmp_path / "a", tmp_path / "b"
    summary = proxy_labels.run(p, {"patches": patches}, {"labels": a})
    proxy_labels.run(p, {"patches": patches}, {"labels": b})
    assert _tree(a) == _tree(b)  # same seed → byte-identical JSON (and parquet)
    subset = a / p.labels.subset
    assert sorted(d.name for d in subset.iterdir()) == ["A", "B", "C"]
    for slot in "ABC":
        assert sorted(f.stem for f in (subset / slot).iterdir()) == sorted(GROUPS)
        for gid in GROUPS:
            text = (subset / slot / f"{gid}.json").read_text()
            assert json.loads(text)["Source"] == "proxy"
            assert parse_label_file(text, gid).source == "proxy"
    manifest = json.loads((a / "proxy_labels.json").read_text())
    assert manifest["enabled"] and manifest["Source"] == "proxy"
    assert "NOT human" in manifest["note"]
    audit = read_parquet(a / "proxy_labels.parquet")
    assert len(audit) == len(GROUPS) * 4 * 3
    assert summary["groups"] == len(GROUPS)
    assert sum(summary[f"votes_{lab}"] for lab in ("positive", "similar", "negative")) == len(audit)
    # The audit table is the JSONs' content: every label is traceable to its numbers.
    first = audit[(audit.group_id == GROUPS[0]) & (audit.annotator == "B")]
    data = json.loads((subset / "B" / f"{GROUPS[0]}.json").read_text())
    assert list(first.label) == [data[f"Picture_{k}"]["Label"] for k in range(2, 6)]
    # Another seed draws other annotator noise.
    proxy_labels.run(
        dataclasses.replace(p, seed=1), {"patches": patches}, {"labels": tmp_path / "c"}
    )
    assert _tree(tmp_path / "c") != _tree(a)


def test_labels_follow_the_cues_when_annotators_are_noiseless(tmp_path, params, patches):
    p = _params(params)
    p = dataclasses.replace(
        p, proxy_labels=dataclasses.replace(p.proxy_labels, annotator_noise=0.0)
    )
    proxy_labels.run(p, {"patches": patches}, {"labels": tmp_path / "l"})
    audit = read_parquet(tmp_path / "l" / "proxy_labels.parquet")
    by_version = audit.groupby("version").label.agg(lambda s: sorted(set(s)))
    assert by_version["01"] == [N]  # blurred
    assert by_version["02"] == [P]  # sharpened
    assert by_version["03"] == [S]  # identical
    assert by_version["04"] == [N]  # noise added in flat areas


def test_other_sources_get_a_marker_and_human_labels_are_never_overwritten(
    tmp_path, params, patches
):
    out = tmp_path / "05_labels"
    s = proxy_labels.run(
        _params(params, source="tool", root=str(tmp_path / "export")),
        {"patches": patches},
        {"labels": out},
    )
    assert s["proxy_enabled"] == 0
    assert [f.name for f in out.iterdir()] == ["proxy_labels.json"]
    assert json.loads((out / "proxy_labels.json").read_text())["enabled"] is False
    # labels.root inside this stage's output: refuse before touching anything.
    (out / "default" / "A").mkdir(parents=True)
    (out / "default" / "A" / "human.json").write_text("{}")
    before = _tree(out)
    for root in (out, out / "default"):
        with pytest.raises(ValueError, match="overlaps this stage's output"):
            proxy_labels.run(
                _params(params, source="hggt_release", root=str(root)),
                {"patches": patches},
                {"labels": out},
            )
    assert _tree(out) == before


class _Tags:
    def __init__(self):
        self.tags = {}

    def set_tags(self, tags):
        self.tags.update(tags)


def test_proxy_origin_reaches_dataset_summary_and_tags(tmp_path, params, patches):
    p = _params(params)
    p = dataclasses.replace(p, build_dataset=dataclasses.replace(p.build_dataset, test_groups=1))
    labels, dataset = tmp_path / "05_labels", tmp_path / "06_dataset"
    tags = _Tags()
    proxy_labels.run(p, {"patches": patches}, {"labels": labels}, tags)
    assert tags.tags == {"label_source": "proxy"}
    tags = _Tags()
    summary = build_dataset.run(
        p, {"patches": patches, "labels": labels}, {"dataset": dataset}, tags
    )
    assert tags.tags == {"label_source": "proxy"}
    assert summary["label_source"] == "proxy" and "NOT human" in summary["label_note"]
    groups = read_parquet(dataset / "groups.parquet")
    assert set(groups.source) == {"proxy"} and sorted(groups.group_id) == sorted(GROUPS)
    assert set(read_parquet(dataset / "labels_raw.parquet").source) == {"proxy"}
    assert json.loads((dataset / "agreement.json").read_text())["label_source"] == "proxy"


def test_other_annotator_counts_flow_through(tmp_path, params, patches):
    p = _params(params, annotators=4)
    p = dataclasses.replace(p, build_dataset=dataclasses.replace(p.build_dataset, test_groups=0))
    proxy_labels.run(p, {"patches": patches}, {"labels": tmp_path / "l"})
    assert sorted(d.name for d in (tmp_path / "l" / "default").iterdir()) == list("ABCD")
    build_dataset.run(
        p, {"patches": patches, "labels": tmp_path / "l"}, {"dataset": tmp_path / "d"}
    )
    raw = read_parquet(tmp_path / "d" / "labels_raw.parquet")
    assert len(raw) == len(GROUPS) * 4 * 4
    # Built with 3 annotators, the 4-annotator tree is refused.
    with pytest.raises(LabelValidationError, match="has 4 annotator file"):
        build_dataset.run(
            _params(params),
            {"patches": patches, "labels": tmp_path / "l"},
            {"dataset": tmp_path / "e"},
        )


@pytest.mark.slow
def test_same_labels_for_any_worker_count(tmp_path, params, patches):
    proxy_labels.run(_params(params), {"patches": patches}, {"labels": tmp_path / "a"})
    p2 = dataclasses.replace(params, executor=dataclasses.replace(params.executor, workers=2))
    proxy_labels.run(p2, {"patches": patches}, {"labels": tmp_path / "b"})
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
