"""The tool under load in its own process: concurrent writers, and a SIGKILL mid-load."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import threading

import httpx
import pytest

from tests.annotate.fixtures import auth, event, free_port, make_study, start_server

THREADS = 8
LABELS_PER_THREAD = 200
LABELS = ("Positive", "Similar", "Negative")


@pytest.fixture
def crowd(tmp_path):
    """8 annotators, 8 groups, k=3: every annotator has 3 assignments of their own."""
    return make_study(tmp_path, annotators=THREADS, k=3, n_images=4, per_image=2)


def _first_aids(url: str, tokens: dict[str, str]) -> dict[str, str]:
    return {
        n: httpx.get(f"{url}/api/next", headers=auth(t)).json()["aid"] for n, t in tokens.items()
    }


def _label_rows(db) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {r[0] for r in conn.execute("SELECT id FROM event WHERE kind = 'label'")}
    finally:
        conn.close()


def test_8_threads_x_200_labels_all_stored(crowd):
    port = free_port()
    proc = start_server(crowd.db, port)
    url = f"http://127.0.0.1:{port}"
    try:
        aids = _first_aids(url, crowd.tokens)
        errors: list[str] = []
        sent: list[str] = []
        lock = threading.Lock()

        def worker(name: str) -> None:
            with httpx.Client(base_url=url, headers=auth(crowd.tokens[name]), timeout=60) as c:
                for i in range(LABELS_PER_THREAD):
                    ev = event(aids[name], "label", i % 4, LABELS[i % 3])
                    r = c.post("/api/events", json={"events": [ev]})
                    with lock:
                        if r.status_code != 200 or r.json()["acked"] != [ev["id"]]:
                            errors.append(f"{r.status_code} {r.text[:200]}")
                        sent.append(ev["id"])

        threads = [threading.Thread(target=worker, args=(n,)) for n in crowd.tokens]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert errors == []
    assert "database is locked" not in stderr.decode()
    assert len(sent) == THREADS * LABELS_PER_THREAD
    assert _label_rows(crowd.db) == set(sent)


def test_sigkill_mid_load_loses_no_acknowledged_label(crowd):
    port = free_port()
    proc = start_server(crowd.db, port)
    url = f"http://127.0.0.1:{port}"
    aids = _first_aids(url, crowd.tokens)
    acked: list[str] = []
    lock = threading.Lock()
    enough = threading.Event()

    def worker(name: str) -> None:
        with httpx.Client(base_url=url, headers=auth(crowd.tokens[name]), timeout=10) as c:
            for i in range(10_000):
                ev = event(aids[name], "label", i % 4, LABELS[i % 3])
                try:
                    r = c.post("/api/events", json={"events": [ev]})
                except httpx.HTTPError:
                    return  # the server is gone
                with lock:
                    acked.extend(r.json()["acked"])
                    if len(acked) >= 300:
                        enough.set()

    threads = [threading.Thread(target=worker, args=(n,)) for n in list(crowd.tokens)[:4]]
    for t in threads:
        t.start()
    assert enough.wait(60), "the server acknowledged too few labels"
    os.kill(proc.pid, signal.SIGKILL)  # no shutdown hook, no checkpoint: only the WAL remains
    proc.wait(timeout=10)
    for t in threads:
        t.join(timeout=30)
    assert (crowd.db.parent / "study.db-wal").exists()

    proc = start_server(crowd.db, port)
    try:
        stored = _label_rows(crowd.db)
        assert len(acked) >= 300 and set(acked) <= stored
        # The restarted server serves the same state: the first group still shows the labels.
        token = crowd.tokens["ann0"]
        g = httpx.get(f"{url}/api/assignment/{aids['ann0']}", headers=auth(token)).json()
        assert all(lab in LABELS for lab in g["labels"])
        conn = sqlite3.connect(crowd.db)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()
        # A raw request line with ../ that no client library would normalise away.
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(
                f"GET /api/img/{aids['ann0']}/../../../../etc/passwd HTTP/1.1\r\n"
                f"Host: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n".encode()
            )
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        status = int(reply.split(b" ", 2)[1])
        assert 400 <= status < 500 and b"root:" not in reply
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
