"""``hggt annotate`` sub-commands end to end (in process), and the module entry point."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from hggt.annotate import db
from hggt.annotate.cli import main
from tests.annotate.fixtures import ROOT, make_patches
from tests.annotate.test_export import annotate


class _Study:
    def __init__(self, path, patches):
        self.db, self.patches = path, patches


def test_cli_init_add_assign_stats_export(tmp_path, capsys):
    patches = make_patches(tmp_path / "patches")
    study = tmp_path / "study.db"
    base = ["--db", str(study)]
    assert (
        main(["init", *base, "--patches", str(patches), "--seed", "3", "--controls", "0.25"]) == 0
    )
    out = capsys.readouterr().out
    admin = out.strip().splitlines()[-1]
    assert "4 groups, 1 control groups (seed 3)" in out and len(admin) >= 40

    links = {}
    for name in ("ann0", "ann1", "ann2"):
        assert main(["add-annotator", name, *base, "--base-url", "http://127.0.0.1:9999/"]) == 0
        link = capsys.readouterr().out.strip().splitlines()[-1]
        m = re.fullmatch(r"http://127\.0\.0\.1:9999/#t=([A-Za-z0-9_-]{40,})", link)
        assert m, link
        links[name] = m.group(1)
    conn = db.connect(study)
    assert {db.annotator_for_token(conn, t).name for t in links.values()} == set(links)
    assert db.annotator_for_token(conn, admin).is_admin
    conn.close()

    assert main(["add-annotator", "ann0", *base]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["assign", *base, "--k", "3"]) == 0
    assert capsys.readouterr().out.count("groups (") == 3
    assert main(["assign", *base]) == 2

    annotate(_Study(study, patches))
    assert main(["stats", *base, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    # 4 real groups + ceil(0.25·4) = 1 control + ceil(0.05·4) = 1 repeat (default share) each.
    assert [s["submitted"] for s in stats] == [6, 6, 6] and all(s["control_n"] == 2 for s in stats)
    assert main(["stats", *base]) == 0
    assert "control acc." in capsys.readouterr().out

    out_dir = tmp_path / "labels"
    assert main(["export", *base, "--out", str(out_dir), "--subset", "mine"]) == 0
    assert "exported 4 complete groups (12 label files" in capsys.readouterr().out
    assert len(list((out_dir / "mine").glob("[ABC]/*.json"))) == 12
    assert main(["export", *base, "--out", str(out_dir), "--subset", "../up"]) == 2


def test_cli_reports_a_missing_study(tmp_path, capsys):
    assert main(["stats", "--db", str(tmp_path / "none.db")]) == 2
    assert "no study database" in capsys.readouterr().err


def test_module_entry_point_runs():
    r = subprocess.run(
        [sys.executable, "-m", "hggt.annotate.cli", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0
    for sub in ("init", "add-annotator", "assign", "serve", "stats", "export"):
        assert sub in r.stdout
