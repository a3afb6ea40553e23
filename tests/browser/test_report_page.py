"""reports/report.html in headless Chromium (file://): tables and embedded figures are there.

The page is built by the report stage from the fixture of tests/stages/test_report.py (one run
missing). Nothing on the page may reach the network: every request other than the file itself
and data: URLs fails the test.
"""

from __future__ import annotations

import pytest

from hggt.stages import report
from tests.stages.test_report import MISSING_RUN, build_report


@pytest.fixture(scope="module")
def report_html(tmp_path_factory, params):
    _, outputs = build_report(tmp_path_factory.mktemp("report_page"), params)
    return outputs["html"]


def test_report_page_shows_table_and_images(context, report_html, shot):
    requests: list[str] = []
    page = context.new_page()
    page.on("request", lambda r: requests.append(r.url))
    page.goto(report_html.as_uri())
    page.wait_for_load_state("load")

    assert "not human judgements" in page.inner_text("#label-source")
    rows = page.eval_on_selector_all(
        "#table3 tbody tr", "trs => trs.map(tr => [...tr.cells].map(c => c.innerText))"
    )
    assert len(rows) == 7  # 2 backbones × 3 training sets + bicubic
    assert rows[0][:3] == ["RRDB-GAN", "Original HR", "22.6388"]
    missing = page.eval_on_selector_all("#table3 tr.missing", "trs => trs.map(t => t.innerText)")
    assert len(missing) == 1 and "run missing" in missing[0] and "Pos+Neg GT" in missing[0]
    assert MISSING_RUN.startswith("swinir") and "SwinIR-GAN" in missing[0]

    images = page.eval_on_selector_all(
        "figure img", "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight])"
    )
    assert len(images) == 5
    assert all(done and w > 0 and h > 0 for done, w, h in images), images
    ids = page.eval_on_selector_all("figure", "fs => fs.map(f => f.id)")
    assert ids == [
        "fig-metric_bars",
        "fig-fig7_grid",
        "fig-fig3_negative_maps",
        "fig-fig4_lr_inputs",
        "fig-training_curves",
    ]
    assert all(u == report_html.as_uri() or u.startswith("data:") for u in requests), requests
    shot(page, "report")
    page.close()


def test_report_stage_outputs_match_dvc_yaml_names():
    # The browser opens what the stage writes at these paths under `make repro`.
    assert report.OUTS["html"] == "reports/report.html"
