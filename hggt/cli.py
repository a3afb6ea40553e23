"""The ``hggt`` console script: params tools and one sub-command per stage.

Stage sub-commands (``hggt ingest …``) call the same ``main()`` that ``python -m
hggt.stages.<stage>`` runs under DVC; the remaining arguments are passed through.
"""

from __future__ import annotations

import argparse
import importlib
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

# Sub-command → stage module. Plain dict, fails loudly on a typo (STYLE rule 3).
STAGES = {
    "ingest": "hggt.stages.ingest",
}


def _params_show(args: argparse.Namespace) -> int:
    from hggt.params import load_params, to_dict

    params = load_params(args.params)
    data = to_dict(params)
    if args.section:
        for part in args.section.split("."):
            if not isinstance(data, dict) or part not in data:
                print(
                    f"hggt params show: no section {args.section!r} in {args.params}",
                    file=sys.stderr,
                )
                return 2
            data = data[part]
    print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), end="")
    return 0


def _update_in_place(node: Any, override: dict[str, Any]) -> None:
    # Assign into ruamel's round-trip maps so params.yaml keeps its comments and key order.
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(node.get(key), dict):
            _update_in_place(node[key], value)
        else:
            node[key] = value


def _params_apply(args: argparse.Namespace) -> int:
    from ruamel.yaml import YAML

    from hggt.io import atomic_write_bytes
    from hggt.params import ParamsError, merge, parse_params

    target = Path(args.params)
    base = yaml.safe_load(target.read_text(encoding="utf-8"))
    override = yaml.safe_load(Path(args.file).read_text(encoding="utf-8")) or {}
    try:
        parse_params(merge(base, override))  # validate before touching params.yaml
    except ParamsError as exc:
        print(f"hggt params apply: {args.file}: {exc}", file=sys.stderr)
        return 2
    rt = YAML(typ="rt")
    rt.width = 4096
    doc = rt.load(target.read_text(encoding="utf-8"))
    _update_in_place(doc, override)
    buf = io.StringIO()
    rt.dump(doc, buf)
    atomic_write_bytes(target, buf.getvalue().encode("utf-8"))
    print(f"merged {args.file} into {target}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hggt", description="HGGT pipeline tools.")
    sub = parser.add_subparsers(dest="command", required=True)

    p_params = sub.add_parser("params", help="show or change params.yaml")
    p_sub = p_params.add_subparsers(dest="action", required=True)
    show = p_sub.add_parser("show", help="print the resolved, validated params")
    show.add_argument("section", nargs="?", help="dotted section, e.g. synthesize_lr.degradation")
    show.add_argument("--params", default="params.yaml")
    show.set_defaults(func=_params_show)
    apply = p_sub.add_parser(
        "apply", help="merge an override file (e.g. configs/paper.yaml) into params.yaml"
    )
    apply.add_argument("file")
    apply.add_argument("--params", default="params.yaml")
    apply.set_defaults(func=_params_apply)

    for name in STAGES:
        sub.add_parser(
            name, help=f"run the {name} stage (same as python -m {STAGES[name]})", add_help=False
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in STAGES:
        importlib.import_module(STAGES[argv[0]]).main(argv[1:])
        return 0
    from hggt.params import ParamsError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ParamsError as exc:
        print(f"hggt: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
