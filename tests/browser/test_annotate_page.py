"""The annotation page in Chromium: keys, undo, synchronised zoom, flicker, resume, offline."""

from __future__ import annotations

import hashlib
import re
import sqlite3

import pytest

from hggt.annotate import db
from tests.annotate.fixtures import VERSIONS

READY = "body[data-ready='1']"
TRANSFORM = re.compile(r"translate\(([-\d.e]+)px, ([-\d.e]+)px\) scale\(([-\d.e]+)\)")


def open_page(context, live, annotator):
    page = context.new_page()
    page.goto(live.link(annotator))
    page.wait_for_selector(READY, timeout=15_000)
    assert "#t=" not in page.url  # the token left the address bar
    return page


def aid_of(page) -> str:
    return page.get_attribute("body", "data-aid")


def labels(page) -> list[str | None]:
    return page.eval_on_selector_all(".cand", "els => els.map(e => e.dataset.label || null)")


def focused(page) -> int:
    return int(page.get_attribute(".cand.focused", "data-pos"))


def transforms(page) -> list[tuple[float, float, float]]:
    raw = page.eval_on_selector_all(".vp img", "els => els.map(e => e.style.transform)")
    out = []
    for t in raw:
        m = TRANSFORM.fullmatch(t)
        assert m, t
        out.append(tuple(float(x) for x in m.groups()))
    return out


def wait_saved(page, timeout=10_000):
    page.wait_for_selector("#save-status[data-state='saved']", timeout=timeout)


def stored(live, aid):
    """(labels by display position, event kinds) of one assignment, read from the database."""
    conn = db.connect(live.study.db)
    try:
        row = conn.execute("SELECT id FROM assignment WHERE aid = ?", (aid,)).fetchone()
        evs = db.assignment_events(conn, row["id"])
        return db.replay(evs)["labels"], [e["kind"] for e in evs]
    finally:
        conn.close()


def perm_of(live, aid) -> list[str]:
    conn = sqlite3.connect(live.study.db)
    try:
        perm = conn.execute("SELECT perm FROM assignment WHERE aid = ?", (aid,)).fetchone()[0]
    finally:
        conn.close()
    return [VERSIONS[int(c)] for c in perm]


def image_hashes(page) -> list[str]:
    """sha256 of the decoded pixels of the original and the four candidates, as shown."""
    urls = page.evaluate(
        """() => [...document.querySelectorAll('.vp img')].map(im => {
            const c = document.createElement('canvas');
            c.width = im.naturalWidth; c.height = im.naturalHeight;
            const g = c.getContext('2d'); g.drawImage(im, 0, 0);
            return Array.from(g.getImageData(0, 0, c.width, c.height).data).join(',');
        })"""
    )
    return [hashlib.sha256(u.encode()).hexdigest() for u in urls]


def test_label_by_keys_submit_and_next(live, context, shot):
    page = open_page(context, live, "ann0")
    first = aid_of(page)
    assert page.text_content("#group-info") == "group 1/6"
    assert focused(page) == 0
    for key, pos_after in (("p", 1), ("2", 2), ("n", 3)):
        page.keyboard.press(key)
        assert focused(page) == pos_after  # labelling advances to the next open candidate
    assert page.is_disabled("#submit")
    page.keyboard.press("Numpad1")
    want = ["Positive", "Similar", "Negative", "Positive"]
    assert labels(page) == want
    assert page.text_content("#labelled-info") == "4/4 labelled"
    assert page.is_enabled("#submit")
    shot(page, "labelled")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "a => document.body.dataset.aid !== a && document.body.dataset.ready === '1'", arg=first
    )
    assert labels(page) == [None] * 4 and focused(page) == 0
    assert page.text_content("#group-info") == "group 2/6"
    width = page.eval_on_selector("#progress-fill", "e => e.style.width")
    assert float(width.rstrip("%")) == pytest.approx(100 / 6, abs=1e-3)
    shot(page, "next-group")
    got, kinds = stored(live, first)
    assert got == want and kinds == ["view", "label", "label", "label", "label", "submit"]
    # The labels reach the export under the versions that were shown at each position.
    conn = db.snapshot(live.study.db)
    (rec,) = [r for r in db.submitted_assignments(conn) if r["aid"] == first]
    assert rec["labels"] == dict(zip(perm_of(live, first), want, strict=True))


def test_undo_restores_the_previous_label(live, context):
    page = open_page(context, live, "ann1")
    aid = aid_of(page)
    page.keyboard.press("p")  # A = Positive, focus → B
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("s")  # A relabelled Similar
    assert labels(page)[0] == "Similar" and focused(page) == 1
    page.keyboard.press("z")
    assert labels(page)[0] == "Positive" and focused(page) == 0
    page.keyboard.press("Backspace")
    assert labels(page) == [None] * 4
    assert page.is_disabled("#undo")
    page.keyboard.press("3")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.click(".cand[data-pos='3'] button[data-label='Similar']")
    assert labels(page) == ["Negative", None, None, "Similar"]
    wait_saved(page)
    got, kinds = stored(live, aid)
    assert got == ["Negative", None, None, "Similar"]
    assert kinds.count("undo") == 2 and kinds.count("label") == 4


def test_zoom_and_pan_keep_all_viewports_equal(live, context, shot):
    page = open_page(context, live, "ann0")
    fit = transforms(page)
    assert len(fit) == 5 and len(set(fit)) == 1
    vp_size = page.eval_on_selector(".vp", "e => e.clientWidth")
    # Fit: the 64-px patch fills the viewport.
    assert fit[0][2] == pytest.approx(vp_size / 64, rel=1e-4)
    box = page.locator(".cand[data-pos='2'] .vp").bounding_box()
    border = page.eval_on_selector(".vp", "e => e.clientLeft")
    mx, my = round(box["x"] + border + 30), round(box["y"] + border + 45)
    cx, cy = mx - box["x"] - border, my - box["y"] - border  # cursor in viewport coordinates
    page.mouse.move(mx, my)
    raw_fit = page.eval_on_selector(".vp img", "e => e.style.transform")
    page.mouse.wheel(0, -300)
    page.wait_for_function(
        "t => document.querySelector('.vp img').style.transform !== t", arg=raw_fit
    )
    zoomed = transforms(page)
    assert len(set(zoomed)) == 1
    (tx0, ty0, s0), (tx1, ty1, s1) = fit[0], zoomed[0]
    assert s1 > 1.5 * s0
    # Zoom is about the cursor: the image point under it stays put.
    assert (cx - tx1) / s1 == pytest.approx((cx - tx0) / s0, abs=0.01)
    assert (cy - ty1) / s1 == pytest.approx((cy - ty0) / s0, abs=0.01)
    page.mouse.down()
    page.mouse.move(mx + 50, my + 20, steps=5)
    page.mouse.up()
    panned = transforms(page)
    assert len(set(panned)) == 1
    # (CSS serialises transforms to 6 significant digits, hence rel=1e-4.)
    assert panned[0] == pytest.approx((tx1 + 50, ty1 + 20, s1), rel=1e-4)
    assert page.eval_on_selector_all(
        ".vp img", "els => els.every(e => e.classList.contains('pixelated'))"
    )
    shot(page, "zoomed")
    page.keyboard.press("+")
    assert transforms(page)[0][2] == pytest.approx(s1 * 1.25, rel=1e-4)
    page.click("#zoom-out")
    assert transforms(page)[0][2] == pytest.approx(s1, rel=1e-4)
    page.keyboard.press("f")
    dpr = page.evaluate("devicePixelRatio")
    one = transforms(page)
    assert len(set(one)) == 1 and one[0][2] * dpr == pytest.approx(1.0, rel=1e-4)
    assert page.text_content("#zoom-level") == "100%"
    page.keyboard.press("0")
    assert transforms(page) == fit and page.text_content("#zoom-level") == "fit"


def test_space_flickers_the_focused_candidate(live, context, shot):
    page = open_page(context, live, "ann2")
    page.keyboard.press("ArrowRight")
    assert focused(page) == 1
    srcs = page.eval_on_selector_all(".vp img", "els => els.map(e => e.src)")
    assert len(set(srcs)) == 5
    page.keyboard.down("Space")
    during = page.eval_on_selector_all(".vp img", "els => els.map(e => e.src)")
    assert during[2] == srcs[0]  # candidate B (index 1 + the original) now shows the original
    assert during[:2] + during[3:] == srcs[:2] + srcs[3:]
    assert page.eval_on_selector(".cand[data-pos='1']", "e => e.classList.contains('flicker')")
    shot(page, "flicker")
    page.keyboard.up("Space")
    assert page.eval_on_selector_all(".vp img", "els => els.map(e => e.src)") == srcs
    assert not page.eval_on_selector(".cand[data-pos='1']", "e => e.classList.contains('flicker')")
    assert labels(page) == [None] * 4


def test_reload_resumes_group_labels_view_and_focus(live, context, shot):
    page = open_page(context, live, "ann1")
    aid = aid_of(page)
    page.keyboard.press("n")
    page.keyboard.press("p")
    page.keyboard.press("+")
    page.keyboard.press("+")
    wait_saved(page)
    before = (labels(page), focused(page), transforms(page), image_hashes(page))
    page.reload()
    page.wait_for_selector(READY, timeout=15_000)
    assert aid_of(page) == aid
    after = (labels(page), focused(page), transforms(page), image_hashes(page))
    assert after == before
    assert before[0] == ["Negative", "Positive", None, None] and before[1] == 2
    shot(page, "resumed")
    _, kinds = stored(live, aid)
    assert kinds == ["view", "label", "label"]  # the reload did not log a second first view


def test_labels_made_offline_arrive_when_the_api_returns(live, context, shot):
    page = open_page(context, live, "ann0")
    aid = aid_of(page)
    wait_saved(page)
    page.route("**/api/events", lambda route: route.abort())
    for key in ("p", "s", "n"):
        page.keyboard.press(key)
    # Wait for the text rather than read it once: CI once read "2 pending" here, the status
    # shown after the first failed POST but before the third key's record() had run.
    page.wait_for_selector(
        "#save-status[data-state='offline']:text-is('offline · 3 pending')", timeout=10_000
    )
    shot(page, "offline")
    assert stored(live, aid)[0] == [None] * 4
    # Even a reload while the API is still unreachable keeps them (localStorage outbox).
    page.reload()
    page.wait_for_selector("#message:not([hidden])")
    assert stored(live, aid)[0] == [None] * 4
    page.unroute("**/api/events")
    page.wait_for_selector(READY, timeout=15_000)
    wait_saved(page)
    assert aid_of(page) == aid
    assert labels(page) == ["Positive", "Similar", "Negative", None]
    assert stored(live, aid)[0] == ["Positive", "Similar", "Negative", None]


def test_two_annotators_at_once(live, browser, shot):
    ctx = [browser.new_context(viewport={"width": 1280, "height": 800}) for _ in range(2)]
    try:
        pages = [open_page(c, live, name) for c, name in zip(ctx, ("ann0", "ann2"), strict=True)]
        aids = [aid_of(p) for p in pages]
        assert aids[0] != aids[1]
        keys = (["p", "p", "s", "n"], ["3", "3", "2", "1"])
        for i in range(4):
            for page, ks in zip(pages, keys, strict=True):
                page.keyboard.press(ks[i])
        for page in pages:
            page.keyboard.press("Enter")
        for page, aid in zip(pages, aids, strict=True):
            page.wait_for_function("a => document.body.dataset.aid !== a", arg=aid)
            page.wait_for_selector(READY)
        shot(pages[0], "ann0")
        shot(pages[1], "ann2")
        assert stored(live, aids[0])[0] == ["Positive", "Positive", "Similar", "Negative"]
        assert stored(live, aids[1])[0] == ["Negative", "Negative", "Similar", "Positive"]
        # One annotator's page cannot fetch the other's images.
        status = pages[1].evaluate(
            """aid => fetch(`/api/img/${aid}/0`, {headers: {Authorization:
                  `Bearer ${localStorage.getItem('hggt.token')}`}}).then(r => r.status)""",
            aids[0],
        )
        assert status == 403
    finally:
        for c in ctx:
            c.close()
