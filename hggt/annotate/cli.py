"""``hggt annotate …``: set up a study, add annotators, assign, serve, report, export.

    hggt annotate init [--db data/annotate/study.db] [--patches data/04_patches]
                       [--controls 0.05] [--repeats 0.05] [--seed N] [--force]
    hggt annotate add-annotator NAME [--base-url http://127.0.0.1:8765]
    hggt annotate assign [--k 3]
    hggt annotate serve [--host 127.0.0.1] [--port 8765]
    hggt annotate stats [--json]
    hggt annotate export [--out data/05_labels] [--subset default]

Also runnable as ``python -m hggt.annotate.cli …``. Heavy imports happen inside the
sub-commands so ``serve`` starts quickly.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from collections.abc import Sequence
from pathlib import Path

DEFAULT_DB = Path("data/annotate/study.db")
DEFAULT_PATCHES = Path("data/04_patches")
DEFAULT_PORT = 8765


def _default_seed(params: Path) -> int:
    # The project seed (params.yaml `seed`) when run from the repository; 0 elsewhere.
    if not params.is_file():
        return 0
    import yaml

    return int((yaml.safe_load(params.read_text(encoding="utf-8")) or {}).get("seed", 0))


def _init(args: argparse.Namespace) -> int:
    from hggt.annotate.study import init_study

    seed = args.seed if args.seed is not None else _default_seed(Path(args.params))
    token = init_study(
        Path(args.db),
        Path(args.patches),
        seed=seed,
        controls=args.controls,
        repeats=args.repeats,
        force=args.force,
    )
    from hggt.annotate.db import connect

    conn = connect(args.db)
    try:
        n_real, n_ctrl = conn.execute(
            "SELECT SUM(is_control = 0), SUM(is_control = 1) FROM grp"
        ).fetchone()
    finally:
        conn.close()
    print(f"study {args.db}: {n_real} groups, {n_ctrl} control groups (seed {seed})")
    print("admin token (shown once; guards /api/admin/*):")
    print(token)
    return 0


def _add_annotator(args: argparse.Namespace) -> int:
    from hggt.annotate.db import add_annotator, connect, get_meta

    conn = connect(args.db)
    try:
        get_meta(conn)
        token = add_annotator(conn, args.name)
    finally:
        conn.close()
    print(f"annotator {args.name}: open this link (shown once; the token is not stored):")
    # The token travels in the fragment, which browsers never send to the server or to logs.
    print(f"{args.base_url.rstrip('/')}/#t={token}")
    return 0


def _assign(args: argparse.Namespace) -> int:
    from hggt.annotate.study import assign

    summary = assign(Path(args.db), args.k)
    for name, s in summary.items():
        print(
            f"{name}: {s['total']} groups ({s['real']} real, {s['controls']} control, "
            f"{s['repeats']} repeated)"
        )
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from hggt.annotate.app import create_app

    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback:
        print(
            f"warning: serving on {args.host}: anyone who can reach this port can try tokens; "
            "use only on a trusted network",
            file=sys.stderr,
        )
    app = create_app(args.db, args.patches)
    print(f"serving {args.db} on http://{args.host}:{args.port}/", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _stats(args: argparse.Namespace) -> int:
    from hggt.annotate.db import snapshot
    from hggt.annotate.stats import format_stats, study_stats

    conn = snapshot(args.db)
    try:
        rows = study_stats(conn)
    finally:
        conn.close()
    print(json.dumps(rows, indent=2) if args.json else format_stats(rows))
    return 0


def _export(args: argparse.Namespace) -> int:
    from hggt.annotate.export import export

    counts = export(Path(args.db), Path(args.out), args.subset)
    print(
        f"exported {counts['groups']} complete groups ({counts['files']} label files, "
        f"{counts['rows']} long-table rows) to {Path(args.out) / args.subset}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hggt annotate", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, fn, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--db", default=str(DEFAULT_DB), help="study database (%(default)s)")
        p.set_defaults(fn=fn)
        return p

    p = command("init", _init, "create a study from a patches folder")
    p.add_argument("--patches", default=str(DEFAULT_PATCHES), help="(%(default)s)")
    p.add_argument("--controls", type=float, default=0.05, help="control share (%(default)s)")
    p.add_argument("--repeats", type=float, default=0.05, help="repeat share (%(default)s)")
    p.add_argument("--seed", type=int, default=None, help="default: params.yaml seed")
    p.add_argument("--params", default="params.yaml", help=argparse.SUPPRESS)
    p.add_argument("--force", action="store_true", help="replace an existing study")

    p = command("add-annotator", _add_annotator, "add an annotator and print their link")
    p.add_argument("name")
    p.add_argument("--base-url", default=f"http://127.0.0.1:{DEFAULT_PORT}")

    p = command("assign", _assign, "give each group to k annotators")
    p.add_argument("--k", type=int, default=3, help="annotators per group (%(default)s)")

    p = command("serve", _serve, "run the web tool")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--patches", default=None, help="patch folder if moved since init")
    p.add_argument("--log-level", default="warning")

    p = command("stats", _stats, "per-annotator progress, control accuracy, test–retest")
    p.add_argument("--json", action="store_true")

    p = command("export", _export, "write the HGGT label tree, sidecar and long table")
    p.add_argument("--out", default="data/05_labels")
    p.add_argument("--subset", default="default")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command; return the exit status (2 for a study or usage error)."""
    from hggt.annotate.db import StudyError

    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (StudyError, ValueError, FileNotFoundError) as exc:
        print(f"hggt annotate {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
