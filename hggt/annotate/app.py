"""The annotation HTTP API and page (ANNOTATION.md §6.4), a FastAPI app over one study database.

Every ``/api`` route except ``/healthz`` needs ``Authorization: Bearer <token>`` (401 without a
valid one). Annotators reach only their own assignments (403 otherwise); images are addressed
by an opaque assignment id and a display position, so no URL or payload names a model version
or a file, and no path ever comes from the client. Endpoints are plain ``def``: FastAPI runs
them in its thread pool and each request opens its own SQLite connection.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from hggt.annotate import db

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")
MAX_BATCH = 500
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob:; script-src 'self'; style-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


class EventIn(BaseModel):
    """One client event; ``id`` is the client's UUID, ``client_ts`` epoch milliseconds."""

    id: str = Field(max_length=64)
    aid: str = Field(max_length=64)
    kind: Literal["view", "label", "undo", "submit"]
    pos: int | None = Field(default=None, ge=0, le=3)
    label: Literal["Positive", "Similar", "Negative"] | None = None
    undoes: str | None = Field(default=None, max_length=64)
    client_ts: float | None = None
    payload: dict[str, Any] | None = None


class EventBatch(BaseModel):
    events: list[EventIn] = Field(max_length=MAX_BATCH)


def caller(request: Request) -> db.Annotator:
    """The annotator whose bearer token the request carries; 401 without a valid one."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(401, "bearer token required", {"WWW-Authenticate": "Bearer"})
    known: dict[str, db.Annotator] = request.app.state.known_tokens
    digest = db.token_sha256(token)
    who = known.get(digest)
    if who is None:
        with contextlib.closing(db.connect(request.app.state.db_path)) as c:
            who = db.annotator_for_token(c, token)
        if who is None:
            raise HTTPException(401, "unknown token", {"WWW-Authenticate": "Bearer"})
        known[digest] = who  # tokens are never revoked while serving
    return who


Caller = Annotated[db.Annotator, Depends(caller)]


def admin(who: Caller) -> db.Annotator:
    """The caller, if it holds the admin token; 403 otherwise."""
    if not who.is_admin:
        raise HTTPException(403, "admin token required")
    return who


Admin = Annotated[db.Annotator, Depends(admin)]


def create_app(db_path: str | Path, patches_dir: str | Path | None = None) -> FastAPI:
    """Build the app for the study at ``db_path``.

    Args:
        db_path: the study database (``hggt annotate init``).
        patches_dir: where the patch files are, if they moved since ``init``; defaults to the
            folder recorded in the study.
    """
    db_path = Path(db_path)
    conn = db.connect(db_path)
    try:
        meta = db.get_meta(conn)
    finally:
        conn.close()
    root = Path(patches_dir or meta["patches_dir"]).resolve()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        # Fold the WAL into the main file on a clean shutdown (ANNOTATION.md §6.2).
        with contextlib.closing(db.connect(db_path)) as c:
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    app = FastAPI(title="hggt annotate", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.db_path = db_path
    app.state.known_tokens = {}

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    @contextlib.contextmanager
    def opened() -> Iterator[sqlite3.Connection]:
        c = db.connect(db_path)
        try:
            yield c
        finally:
            c.close()

    def own(c: sqlite3.Connection, who: db.Annotator, aid: str) -> sqlite3.Row:
        try:
            return db.assignment_for(c, who, aid)
        except KeyError:
            raise HTTPException(404, "no such assignment") from None
        except db.Forbidden:
            raise HTTPException(403, "not your assignment") from None

    def group_payload(c: sqlite3.Connection, who: db.Annotator, asg: sqlite3.Row | None):
        done, total = db.progress(c, who.id)
        if asg is None:
            return {"finished": True, "done": done, "total": total}
        evs = db.assignment_events(c, asg["id"])
        state = db.replay(evs)
        aid = asg["aid"]
        return {
            "finished": False,
            "aid": aid,
            "seq": asg["seq"],
            "done": done,
            "total": total,
            "ref": f"/api/img/{aid}/ref",
            "slots": [{"pos": p, "img": f"/api/img/{aid}/{p}"} for p in range(4)],
            "labels": state["labels"],
            "submitted": state["submitted"],
            "viewed": state["viewed"],
            "history": [
                {"id": e["id"], "kind": e["kind"], "pos": e["pos"], "label": e["label"],
                 "undoes": e["undoes"]}
                for e in evs
                if e["kind"] in ("label", "undo")
            ],
        }  # fmt: skip

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/healthz")
    def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/api/session")
    def session(who: Caller) -> dict[str, Any]:
        with opened() as c:
            done, total = db.progress(c, who.id)
        return {"annotator": who.name, "admin": who.is_admin, "done": done, "total": total}

    @app.get("/api/next")
    def next_group(who: Caller) -> dict[str, Any]:
        with opened() as c:
            return group_payload(c, who, db.next_assignment(c, who.id))

    @app.get("/api/assignment/{aid}")
    def assignment(aid: str, who: Caller) -> dict[str, Any]:
        with opened() as c:
            return group_payload(c, who, own(c, who, aid))

    @app.get("/api/img/{aid}/{which}")
    def image(aid: str, which: str, who: Caller) -> Response:
        with opened() as c:
            asg = own(c, who, aid)
            try:
                src = db.image_source(c, asg, which)
            except KeyError:
                raise HTTPException(404, "no such image") from None
        if src["png"] is not None:
            data = bytes(src["png"])
        else:
            path = (root / src["path"]).resolve()
            # The path comes from the study, never the client; refuse anything outside the
            # patches folder all the same (a tampered database must not serve /etc/passwd).
            if not path.is_relative_to(root) or not path.is_file():
                log.error("image %s of assignment %s is missing or outside %s", path, aid, root)
                raise HTTPException(404, "image file missing")
            data = path.read_bytes()
        return Response(
            data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"}
        )

    @app.post("/api/events")
    def events(batch: EventBatch, who: Caller) -> dict[str, Any]:
        with opened() as c:
            try:
                acked, rejected = db.insert_events(c, who, [e.model_dump() for e in batch.events])
            except KeyError:
                raise HTTPException(404, "no such assignment") from None
            except db.Forbidden:
                raise HTTPException(403, "not your assignment") from None
        return {"acked": acked, "rejected": rejected}

    @app.get("/api/admin/progress")
    def admin_progress(_: Admin) -> list[dict[str, Any]]:
        with opened() as c:
            people = c.execute("SELECT id, name FROM annotator WHERE is_admin = 0 ORDER BY id")
            out = []
            for r in people.fetchall():
                done, total = db.progress(c, r["id"])
                out.append({"annotator": r["name"], "done": done, "total": total})
        return out

    @app.get("/api/admin/stats")
    def admin_stats(_: Admin) -> JSONResponse:
        from hggt.annotate.stats import study_stats

        with contextlib.closing(db.snapshot(db_path)) as snap:
            table = study_stats(snap)
        return JSONResponse(table)

    @app.get("/api/admin/export")
    def admin_export(_: Admin) -> JSONResponse:
        from hggt.annotate.export import long_table

        with contextlib.closing(db.snapshot(db_path)) as snap:
            table = long_table(snap, subset="")
        # The long table as JSON: ISO times, null for missing values.
        return Response(
            table.to_json(orient="records", date_format="iso"), media_type="application/json"
        )

    return app
