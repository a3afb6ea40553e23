"""HTTP API of the annotation tool: auth, isolation, path safety, idempotent events."""

from __future__ import annotations

import json
import sqlite3

import pytest

from hggt.annotate import db
from tests.annotate.fixtures import VERSIONS, auth, event


def _next(client, token):
    r = client.get("/api/next", headers=auth(token))
    assert r.status_code == 200, r.text
    return r.json()


def _rows(study, sql, *args):
    conn = sqlite3.connect(study.db)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/session"),
        ("get", "/api/next"),
        ("get", "/api/img/whatever/ref"),
        ("get", "/api/assignment/whatever"),
        ("post", "/api/events"),
        ("get", "/api/admin/stats"),
        ("get", "/api/admin/export"),
    ],
)
def test_no_or_bad_token_is_401(client, method, path):
    kwargs = {"json": {"events": []}} if method == "post" else {}
    assert getattr(client, method)(path, **kwargs).status_code == 401
    for header in ("Bearer not-a-token", "Basic abc", "Bearer ", "token"):
        r = getattr(client, method)(path, headers={"Authorization": header}, **kwargs)
        assert r.status_code == 401, header


def test_health_and_page_need_no_token(client):
    assert client.get("/healthz").json() == {"ok": True}
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/static/app.js").status_code == 200


def test_only_token_hashes_are_stored(study):
    stored = {r[0] for r in _rows(study, "SELECT token_sha256 FROM annotator")}
    tokens = [study.admin, *study.tokens.values()]
    assert stored == {db.token_sha256(t) for t in tokens}
    dump = "\n".join(sqlite3.connect(study.db).iterdump())
    assert not any(t in dump for t in tokens)


def test_another_annotators_images_and_events_are_403(client, study):
    theirs = _next(client, study.tokens["ann1"])["aid"]
    me = study.tokens["ann0"]
    for which in ("ref", "0", "3"):
        assert client.get(f"/api/img/{theirs}/{which}", headers=auth(me)).status_code == 403
    assert client.get(f"/api/assignment/{theirs}", headers=auth(me)).status_code == 403
    mine = _next(client, me)["aid"]
    batch = [event(mine, "label", 0, "Positive"), event(theirs, "label", 0, "Negative")]
    r = client.post("/api/events", json={"events": batch}, headers=auth(me))
    assert r.status_code == 403
    # The whole batch is refused: not even the event on the caller's own assignment is kept.
    assert _rows(study, "SELECT COUNT(*) FROM event")[0][0] == 0


@pytest.mark.parametrize(
    "path",
    [
        "/api/img/..%2F..%2F..%2Fetc%2Fpasswd/ref",
        "/api/img/{aid}/..%2F..%2Fpatches.parquet",
        "/api/img/{aid}/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/img/{aid}/../../../etc/passwd",
        "/api/img/{aid}/original",
        "/api/img/{aid}/01",
        "/api/img/{aid}/4",
        "/api/img/{aid}/-1",
        "/api/img/%2e%2e/ref",
        "/static/../annotate/db.py",
        "/static/..%2Fdb.py",
        "/static/%2e%2e/%2e%2e/study.db",
    ],
)
def test_path_traversal_is_4xx(client, study, path):
    token = study.tokens["ann0"]
    aid = _next(client, token)["aid"]
    r = client.get(path.format(aid=aid), headers=auth(token))
    assert 400 <= r.status_code < 500, (path, r.status_code)
    assert b"root:" not in r.content and b"PAR1" not in r.content and b"import" not in r.content


def test_a_tampered_image_path_outside_the_patches_is_refused(client, study):
    token = study.tokens["ann0"]
    aid = _next(client, token)["aid"]
    conn = db.connect(study.db)
    conn.execute(
        "UPDATE grp_image SET path = '../../../../etc/passwd' WHERE version = 'original' AND "
        "group_id = (SELECT group_id FROM assignment WHERE aid = ?)",
        (aid,),
    )
    conn.close()
    r = client.get(f"/api/img/{aid}/ref", headers=auth(token))
    assert r.status_code == 404 and b"root:" not in r.content


def test_payloads_hide_versions_and_images_follow_the_permutation(client, study):
    token = study.tokens["ann2"]
    g = _next(client, token)
    aid = g["aid"]
    perm, name, is_control, base = _rows(
        study,
        "SELECT a.perm, g.name, g.is_control, g.base_group FROM assignment a "
        "JOIN grp g ON g.id = a.group_id WHERE a.aid = ?",
        aid,
    )[0]
    text = json.dumps(g)
    # Nothing in the payload names a group, a file or a version folder.
    assert name not in text and ".png" not in text and "control" not in text
    assert all(f'"{v}"' not in text for v in VERSIONS)
    assert [s["img"] for s in g["slots"]] == [f"/api/img/{aid}/{p}" for p in range(4)]
    assert g["ref"] == f"/api/img/{aid}/ref"
    if not is_control:
        for p in range(4):
            v = VERSIONS[int(perm[p])]
            want = (study.patches / v / f"{name}_{v}.png").read_bytes()
            got = client.get(f"/api/img/{aid}/{p}", headers=auth(token))
            assert got.content == want, (p, v)
            assert got.headers["cache-control"].startswith("private")
        want = (study.patches / "original" / f"{name}.png").read_bytes()
        assert client.get(f"/api/img/{aid}/ref", headers=auth(token)).content == want


def test_duplicate_event_is_stored_once(client, study):
    token = study.tokens["ann0"]
    aid = _next(client, token)["aid"]
    ev = event(aid, "label", 1, "Similar", client_ts=1.7e12)
    for _ in range(3):
        r = client.post("/api/events", json={"events": [ev, ev]}, headers=auth(token))
        assert r.status_code == 200 and r.json()["acked"] == [ev["id"], ev["id"]]
    assert _rows(study, "SELECT COUNT(*) FROM event WHERE id = ?", ev["id"])[0][0] == 1
    # Another annotator cannot claim (or overwrite) that id.
    other = study.tokens["ann1"]
    forged = {**ev, "aid": _next(client, other)["aid"], "label": "Negative"}
    r = client.post("/api/events", json={"events": [forged]}, headers=auth(other))
    assert r.json() == {"acked": [], "rejected": {ev["id"]: "event id already used"}}
    assert _rows(study, "SELECT label FROM event WHERE id = ?", ev["id"]) == [("Similar",)]


def test_events_table_is_append_only(study):
    conn = db.connect(study.db)
    aid = conn.execute("SELECT aid FROM assignment LIMIT 1").fetchone()[0]
    who = db.Annotator(*conn.execute(
        "SELECT n.id, n.name, n.is_admin FROM annotator n JOIN assignment a "
        "ON a.annotator_id = n.id WHERE a.aid = ?", (aid,)).fetchone())  # fmt: skip
    db.insert_events(conn, who, [event(aid, "label", 0, "Positive")])
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE event SET label = 'Negative'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM event")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    conn.close()


def test_malformed_events_are_refused_one_by_one(client, study):
    token = study.tokens["ann0"]
    aid = _next(client, token)["aid"]
    good = event(aid, "view")
    bad_id = {**event(aid, "view"), "id": "x"}
    no_label = event(aid, "label", 2, None)
    r = client.post("/api/events", json={"events": [good, bad_id, no_label]}, headers=auth(token))
    body = r.json()
    assert body["acked"] == [good["id"]]
    assert set(body["rejected"]) == {"x", no_label["id"]}
    # Shape errors are validated before anything is written.
    for bad in ({**good, "pos": 4}, {**good, "label": "Great"}, {**good, "kind": "delete"}):
        assert (
            client.post("/api/events", json={"events": [bad]}, headers=auth(token)).status_code
            == 422
        )
    unknown = event("no-such-assignment", "view")
    assert (
        client.post("/api/events", json={"events": [unknown]}, headers=auth(token)).status_code
        == 404
    )


def test_submit_needs_four_labels_then_next_group_and_resume(client, study):
    token = study.tokens["ann0"]
    first = _next(client, token)
    aid = first["aid"]
    labels = ["Positive", "Negative", "Similar"]
    batch = [event(aid, "label", p, lab) for p, lab in enumerate(labels)]
    early = event(aid, "submit")
    r = client.post("/api/events", json={"events": [*batch, early]}, headers=auth(token))
    assert r.json()["rejected"] == {early["id"]: "submit needs all 4 candidates labelled"}
    # Resuming shows the same assignment with its labels and history.
    again = _next(client, token)
    assert again["aid"] == aid and again["labels"] == [*labels, None]
    assert [h["id"] for h in again["history"]] == [e["id"] for e in batch]
    # Undo of the last label restores what was there before it.
    undo = event(aid, "undo", 2, None, undoes=batch[2]["id"])
    last = [undo, event(aid, "label", 3, "Positive"), event(aid, "label", 2, "Negative")]
    submit = event(aid, "submit", payload={"active_s": 12.5})
    r = client.post("/api/events", json={"events": [*last, submit]}, headers=auth(token))
    assert r.json()["rejected"] == {}
    nxt = _next(client, token)
    assert nxt["aid"] != aid and nxt["seq"] == first["seq"] + 1 and nxt["done"] == 1
    done = client.get(f"/api/assignment/{aid}", headers=auth(token)).json()
    assert done["submitted"] and done["labels"] == ["Positive", "Negative", "Negative", "Positive"]


def test_admin_endpoints_need_the_admin_token(client, study):
    assert client.get("/api/admin/stats", headers=auth(study.tokens["ann0"])).status_code == 403
    r = client.get("/api/admin/progress", headers=auth(study.admin))
    assert r.status_code == 200
    assert [p["annotator"] for p in r.json()] == ["ann0", "ann1", "ann2"]
    assert all(p["done"] == 0 and p["total"] > 0 for p in r.json())
    assert client.get("/api/admin/stats", headers=auth(study.admin)).status_code == 200
    assert client.get("/api/admin/export", headers=auth(study.admin)).json() == []
    aid = _next(client, study.tokens["ann1"])["aid"]
    batch = [event(aid, "label", p, "Similar") for p in range(4)] + [event(aid, "submit")]
    client.post("/api/events", json={"events": batch}, headers=auth(study.tokens["ann1"]))
    rows = client.get("/api/admin/export", headers=auth(study.admin)).json()
    assert sorted(r["slot"] for r in rows) == list(VERSIONS)
    assert {r["annotator"] for r in rows} == {"ann1"} and {r["label"] for r in rows} == {"Similar"}
    assert all(r["t_start"].startswith("20") and r["active_s"] is None for r in rows)
