"""Fault tolerance and determinism of the DVC stages, on a clone of the repository (slow).

- For every stage of ``dvc.yaml`` (foreach/matrix expanded, so new stages join by themselves):
  SIGKILL ``dvc repro --single-item --force <stage>`` (its whole process group) at a seeded random
  point between 10 % and 90 % of its uninterrupted duration, rerun plain ``dvc repro <stage>``,
  and every cached output file must be byte-identical to the uninterrupted run.
- Two runs from scratch in two clones give identical ``dvc.lock`` hashes for every cached output.

The clone is ``git clone`` of HEAD (``HGGT_SNAPSHOT=worktree`` copies the working tree's tracked
and untracked, not ignored, files instead, to test uncommitted work), with ``.venv`` linked and
MLflow writing to the clone's own ``mlflow.db``. One module-scoped clone holds the reference run;
it runs only the selected stages and their upstream (``-k`` narrows it). ``HGGT_REPRO_TARGETS``
(space-separated stage names) narrows the determinism test; default: the whole DAG.

    make test-slow                                   # everything
    .venv/bin/pytest -m slow tests/ops/test_faults.py -k "ingest or extract_patches"
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from hggt.seeding import rng_for
from tests.ops.helpers import BIN, ROOT, kill_group, tool_env, tree

SNAPSHOT = os.environ.get("HGGT_SNAPSHOT", "head")
KILL_WINDOW = (0.1, 0.9)  # fraction of the reference duration (the "random point")
REPRO_TIMEOUT = 3 * 3600


def expand_stages(spec: Mapping[str, Any]) -> list[str]:
    """Stage names of a parsed ``dvc.yaml`` as DVC generates them: ``name``, ``name@key`` for a
    foreach dict, ``name@value``/``name@index`` for a foreach list of scalars/dicts, and
    ``name@v1-v2`` over the product of a matrix (values in the order the matrix lists them)."""
    names: list[str] = []
    for name, body in (spec.get("stages") or {}).items():
        if "foreach" in body:
            each = body["foreach"]
            if isinstance(each, Mapping):
                keys = [str(k) for k in each]
            elif isinstance(each, list):
                keys = [
                    str(i) if isinstance(v, Mapping | list) else str(v) for i, v in enumerate(each)
                ]
            else:
                raise ValueError(
                    f"{name}: foreach over {each!r} (an interpolation) is not expanded here"
                )
            names += [f"{name}@{k}" for k in keys]
        elif "matrix" in body:
            values = list(body["matrix"].values())
            if any(
                not isinstance(v, list) or any(isinstance(x, Mapping | list) for x in v)
                for v in values
            ):
                raise ValueError(f"{name}: only matrices of scalar lists are expanded here")
            names += [f"{name}@{'-'.join(map(str, combo))}" for combo in itertools.product(*values)]
        else:
            names.append(name)
    return names


def _snapshot_dvc_yaml() -> str:
    if SNAPSHOT == "worktree":
        return (ROOT / "dvc.yaml").read_text()
    try:
        return subprocess.run(
            ["git", "show", "HEAD:dvc.yaml"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: the files as they are
        return (ROOT / "dvc.yaml").read_text()


STAGES = expand_stages(yaml.safe_load(_snapshot_dvc_yaml()))


def test_stage_expansion_matches_dvc():
    """The parametrisation's expansion agrees with DVC's own (the working tree's dvc.yaml)."""
    proc = subprocess.run(
        [BIN / "dvc", "stage", "list", "--name-only"],
        cwd=ROOT, env=tool_env(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    want = sorted(proc.stdout.split())
    assert len(want) >= 5 and "ingest" in want
    assert sorted(expand_stages(yaml.safe_load((ROOT / "dvc.yaml").read_text()))) == want


def test_expansion_of_foreach_and_matrix_forms():
    spec = {
        "stages": {
            "a": {"cmd": "x"},
            "b": {"foreach": {"k1": {"x": 1}, "k2": {"x": 2}}, "do": {"cmd": "x"}},
            "c": {"foreach": ["u", 7], "do": {"cmd": "x"}},
            "d": {"foreach": [{"x": 1}, {"x": 2}], "do": {"cmd": "x"}},
            "e": {"matrix": {"arch": ["rrdb", "swinir"], "mode": ["ori", "pos"]}, "cmd": "x"},
        }
    }
    assert expand_stages(spec) == [
        "a", "b@k1", "b@k2", "c@u", "c@7", "d@0", "d@1",
        "e@rrdb-ori", "e@rrdb-pos", "e@swinir-ori", "e@swinir-pos",
    ]  # fmt: skip


# --------------------------------------------------------------------------- clones


def make_clone(dest: Path) -> Path:
    """A copy of the repository to run ``dvc repro`` in (see the module docstring)."""
    if SNAPSHOT == "worktree":
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.split("\0")  # fmt: skip
        for rel in filter(None, listed):
            src = ROOT / rel
            if src.is_file():  # listed but deleted in the working tree: left out
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / rel)
        subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    else:
        subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(dest)], check=True)
    (dest / ".venv").symlink_to(ROOT / ".venv")
    return dest


@dataclass
class Clone:
    path: Path
    env: dict[str, str]

    @classmethod
    def create(cls, dest: Path) -> Clone:
        make_clone(dest)
        return cls(dest, tool_env(MLFLOW_TRACKING_URI=f"sqlite:///{dest / 'mlflow.db'}"))

    def dvc(self, *args: str, timeout: float = REPRO_TIMEOUT) -> str:
        proc = subprocess.run(
            [str(BIN / "dvc"), *args], cwd=self.path, env=self.env,
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, (
            f"dvc {' '.join(args)} failed ({proc.returncode}):\n{out[-6000:]}"
        )
        return out

    def popen(self, log: Path, *args: str) -> subprocess.Popen:
        """Start ``dvc *args`` in its own session (a file for its output: a pipe nobody reads
        would fill up and stall it)."""
        with open(log, "wb") as out:
            return subprocess.Popen(
                [str(BIN / "dvc"), *args], cwd=self.path, env=self.env,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def dag(self) -> Dag:
        import networkx as nx
        from dvc.repo import Repo

        with Repo(str(self.path)) as repo:
            graph = repo.index.graph  # edges point from a stage to the stages it depends on
            order = [
                s.name
                for s in reversed(
                    list(nx.lexicographical_topological_sort(graph, key=lambda s: s.name))
                )
            ]
            upstream = {s.name: {d.name for d in nx.descendants(graph, s)} for s in graph.nodes}
            # cache: false outputs (data/metrics/*.json: wall times) are not compared.
            cached = {s.name: [o.def_path for o in s.outs if o.use_cache] for s in graph.nodes}
        return Dag(order, upstream, cached)

    def outs(self, paths: list[str]) -> dict[str, dict[str, str]]:
        return {p: tree(self.path / p) if (self.path / p).exists() else {} for p in paths}

    def lock_hashes(self) -> dict[str, dict[str, str]]:
        """``{stage: {out path: md5}}`` from dvc.lock."""
        lock = yaml.safe_load((self.path / "dvc.lock").read_text())
        return {
            name: {o["path"]: o.get("md5", "") for o in body.get("outs", [])}
            for name, body in lock["stages"].items()
        }


@dataclass
class Dag:
    order: list[str]
    upstream: dict[str, set[str]]
    cached: dict[str, list[str]]

    def closure(self, targets: list[str]) -> list[str]:
        unknown = sorted(set(targets) - set(self.order))
        assert not unknown, f"not stages of the clone's dvc.yaml: {unknown}"
        need = set(targets).union(*(self.upstream[t] for t in targets))
        return [s for s in self.order if s in need]


@dataclass
class Reference:
    """An uninterrupted run, stage by stage, in one clone: durations and output hashes."""

    clone: Clone
    dag: Dag
    seconds: dict[str, float] = field(default_factory=dict)
    outs: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)

    def ensure(self, targets: list[str]) -> None:
        for stage in self.dag.closure(targets):
            if stage in self.seconds:
                continue
            start = time.perf_counter()
            self.clone.dvc("repro", "--single-item", stage)
            self.seconds[stage] = time.perf_counter() - start
            self.outs[stage] = self.clone.outs(self.dag.cached[stage])
            assert any(self.outs[stage].values()), f"{stage} wrote no cached output"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Reference:
    clone = Clone.create(tmp_path_factory.mktemp("faults") / "clone")
    return Reference(clone, clone.dag())


def _repro_targets(dag: Dag) -> list[str]:
    wanted = os.environ.get("HGGT_REPRO_TARGETS", "").split()
    return dag.closure(wanted) if wanted else dag.order


@pytest.mark.slow
@pytest.mark.timeout(REPRO_TIMEOUT)
def test_two_runs_from_scratch_give_identical_lock_hashes(reference, tmp_path):
    targets = _repro_targets(reference.dag)
    reference.ensure(targets)
    other = Clone.create(tmp_path / "clone2")
    other.dvc("repro", *targets)
    ours, theirs = reference.clone.lock_hashes(), other.lock_hashes()
    compared = 0
    for stage in targets:
        for path in reference.dag.cached[stage]:
            assert ours[stage][path] == theirs[stage][path], f"{stage}: {path} differs between runs"
            compared += 1
    assert compared >= len(targets)


def _stash_checkpoints(clone: Path) -> Path | None:
    # A first run finds no checkpoint; the reference's final one would let the killed run resume
    # at its end. Set them aside and bring back afterwards whatever the fault run did not rewrite.
    ckpt = clone / "data" / ".checkpoints"
    if not ckpt.exists():
        return None
    aside = clone / ".checkpoints-aside"
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(ckpt, aside)
    return aside


def _unstash_checkpoints(clone: Path, aside: Path | None) -> None:
    if aside is None:
        return
    ckpt = clone / "data" / ".checkpoints"
    for src in sorted(p for p in aside.rglob("*") if p.is_file()):
        dst = ckpt / src.relative_to(aside)
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
    shutil.rmtree(aside)


def _litter(clone: Path) -> list[str]:
    """Temporary files or folders of interrupted atomic writes left under data/."""
    return sorted(
        p.relative_to(clone).as_posix()
        for p in (clone / "data").rglob(".*")
        if ".tmp" in p.name and ".checkpoints" not in p.parts
    )


@pytest.mark.slow
@pytest.mark.timeout(REPRO_TIMEOUT)
@pytest.mark.parametrize("stage", STAGES)
def test_killed_stage_reruns_to_identical_outputs(stage, reference, tmp_path):
    reference.ensure([stage])
    clone, outs = reference.clone, reference.dag.cached[stage]
    assert clone.outs(outs) == reference.outs[stage]  # the reference state, before the fault
    upstream = [s for s in reference.dag.closure([stage]) if s != stage]
    # A cache that has never seen this stage's outputs (only its upstream's), as before a first
    # run: otherwise `dvc repro` would check the reference's outputs out instead of running.
    clone.dvc("config", "--local", "cache.dir", str(tmp_path / "cache"))
    aside = _stash_checkpoints(clone.path)
    try:
        if upstream:
            clone.dvc("commit", "--force", "--quiet", *upstream)
        fraction = float(rng_for(0, "test_faults", stage).uniform(*KILL_WINDOW))
        killed_at = None
        for _ in range(3):  # a run faster than the reference may end before the kill point
            log = tmp_path / "killed.log"
            proc = clone.popen(log, "repro", "--single-item", "--force", stage)
            try:
                proc.wait(timeout=fraction * reference.seconds[stage])
            except subprocess.TimeoutExpired:
                kill_group(proc)
                proc.wait()
                killed_at = fraction * reference.seconds[stage]
                break
            assert proc.returncode == 0, log.read_text()[-4000:]
            fraction /= 2
        assert killed_at is not None, f"{stage} always finished before the kill point"
        rerun = clone.dvc("repro", stage)
        got = clone.outs(outs)
        for path in outs:
            differ = sorted(
                f for f in got[path].keys() | reference.outs[stage][path].keys()
                if got[path].get(f) != reference.outs[stage][path].get(f)
            )  # fmt: skip
            assert differ == [], (
                f"{stage} killed at {killed_at:.1f} s of {reference.seconds[stage]:.1f} s: "
                f"{len(differ)} file(s) of {path} differ from the uninterrupted run, "
                f"e.g. {differ[:5]}\nrerun log:\n{rerun[-3000:]}"
            )
        assert "up to date" in clone.dvc("status", stage)
        ran = "ran the stage again" if f"Running stage '{stage}'" in rerun else "found it complete"
        print(f"{stage}: killed at {killed_at:.1f} s of {reference.seconds[stage]:.1f} s; {ran}")
        left = _litter(clone.path)
        if left:
            warnings.warn(f"{stage}: temporary files left by the killed run: {left}", stacklevel=1)
    finally:
        clone.dvc("config", "--local", "--unset", "cache.dir")
        _unstash_checkpoints(clone.path, aside)
