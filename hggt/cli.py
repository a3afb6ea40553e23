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
    "synthesize_lr": "hggt.stages.synthesize_lr",
    "train_enhancer": "hggt.stages.train_enhancer",
    "enhance": "hggt.stages.enhance",
    "extract_patches": "hggt.stages.extract_patches",
    "proxy_labels": "hggt.stages.proxy_labels",
    "build_dataset": "hggt.stages.build_dataset",
    "pretrain_sr": "hggt.stages.pretrain_sr",
    "train_sr": "hggt.stages.train_sr",
    "evaluate": "hggt.stages.evaluate",
    "report": "hggt.stages.report",
}
DEGRADATION_SECTIONS = ("synthesize_lr", "enhance.degradation.a", "enhance.degradation.b")


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


def _degradation_spec(args: argparse.Namespace) -> Any:
    from hggt.degrade import spec_with_preset
    from hggt.params import load_params

    params = load_params(args.params)
    if args.section == "synthesize_lr":
        return spec_with_preset(
            params.synthesize_lr.degradation, args.preset or params.synthesize_lr.preset
        )
    if args.preset:
        raise SystemExit("hggt degrade: --preset applies to --section synthesize_lr only")
    setting = args.section.rsplit(".", 1)[-1]
    return getattr(params.enhance.degradation, setting)


def _degrade_sample(args: argparse.Namespace) -> int:
    import pandas as pd

    from hggt.degrade import sample_params
    from hggt.io import write_parquet
    from hggt.seeding import rng_for

    spec = _degradation_spec(args)
    rng = rng_for(args.seed, "degrade-sample", args.section)
    rows = [sample_params(rng, spec, (args.size, args.size)).to_row() for _ in range(args.n)]
    table = pd.DataFrame(rows)
    write_parquet(args.out, table)
    print(f"wrote {len(table)} draws of {args.section} to {args.out}")
    return 0


def _degrade_apply(args: argparse.Namespace) -> int:
    import json

    from hggt.degrade import apply, sample_params
    from hggt.io import ImageError, read_image, write_png
    from hggt.seeding import rng_for

    spec = _degradation_spec(args)
    try:
        img, _ = read_image(args.image)
    except ImageError as exc:
        print(f"hggt degrade apply: {exc}", file=sys.stderr)
        return 2
    p = sample_params(
        rng_for(args.seed, "degrade-apply", Path(args.image).stem), spec, img.shape[:2]
    )
    write_png(args.out, apply(img, p))
    print(json.dumps(p.to_row(), indent=2, default=str))
    return 0


def _degrade_replay(args: argparse.Namespace) -> int:
    from hggt.io import atomic_write_bytes, read_parquet, sha256_bytes
    from hggt.params import load_params
    from hggt.stages.synthesize_lr import replay

    compression = load_params(args.params).synthesize_lr.png_compression
    table = read_parquet(Path(args.lr_dir) / "degradations.parquet")
    match = table[table.id == args.row_id]
    if match.empty:
        print(
            f"hggt degrade replay: no row {args.row_id!r} in {args.lr_dir}/degradations.parquet",
            file=sys.stderr,
        )
        return 2
    row = match.iloc[0].to_dict()
    data = replay(row, Path(args.hr_dir), compression)
    if args.out:
        atomic_write_bytes(args.out, data)
    same = sha256_bytes(data) == row["sha256"]
    print(
        f"{args.row_id}: {'bytes identical to' if same else 'DIFFERS from'} the recorded LR (sha256 {row['sha256'][:12]}…)"
    )
    return 0 if same else 1


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

    p_deg = sub.add_parser("degrade", help="audit the degradation model: sample, apply, replay")
    d_sub = p_deg.add_subparsers(dest="action", required=True)
    for action, helptext in (
        ("sample", "draw N parameter sets into a parquet table"),
        ("apply", "degrade one image and print its parameters"),
    ):
        d = d_sub.add_parser(action, help=helptext)
        d.add_argument("--section", choices=DEGRADATION_SECTIONS, default="synthesize_lr")
        d.add_argument("--preset", choices=("table2", "paper_code"), help="synthesize_lr only")
        d.add_argument("--seed", type=int, default=0)
        d.add_argument("--params", default="params.yaml")
    d_sample = d_sub.choices["sample"]
    d_sample.add_argument("--n", type=int, default=10000)
    d_sample.add_argument(
        "--size", type=int, default=512, help="input side length the draws assume"
    )
    d_sample.add_argument("--out", required=True)
    d_sample.set_defaults(func=_degrade_sample)
    d_apply = d_sub.choices["apply"]
    d_apply.add_argument("image")
    d_apply.add_argument("out")
    d_apply.set_defaults(func=_degrade_apply)
    d_replay = d_sub.add_parser(
        "replay", help="regenerate one LR image of synthesize_lr bit-exactly"
    )
    d_replay.add_argument("row_id", help="the image id (column `id` of degradations.parquet)")
    d_replay.add_argument("--lr-dir", default="data/07_lr")
    d_replay.add_argument(
        "--hr-dir",
        default="data/04_patches/original",
        help="folder of the original patches (release: <root>/images/<subset>/original)",
    )
    d_replay.add_argument(
        "--params", default="params.yaml", help="for synthesize_lr.png_compression"
    )
    d_replay.add_argument("--out", help="also write the regenerated PNG here")
    d_replay.set_defaults(func=_degrade_replay)

    sub.add_parser(
        "annotate",
        help="the annotation tool: init, add-annotator, assign, serve, stats, export",
        add_help=False,
    )
    sub.add_parser(
        "compare",
        help="Table 3 from the MLflow runs of the current experiment (--format table|markdown|csv)",
        add_help=False,
    )
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
    if argv and argv[0] == "annotate":
        # Imported lazily: the web stack is only needed by annotators.
        from hggt.annotate.cli import main as annotate_main

        return annotate_main(argv[1:])
    if argv and argv[0] == "compare":
        from hggt.compare import main as compare_main

        return compare_main(argv[1:])
    from hggt.params import ParamsError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ParamsError as exc:
        print(f"hggt: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
