"""What every stage's ``main()`` shares: argument parsing, params, tracking, metrics file.

A stage module defines ``STAGE`` (its DVC name), ``PARAMS`` (the dotted params keys it reads,
equal to its ``params:`` list in dvc.yaml), ``DEPS``/``OUTS`` (default paths, equal to dvc.yaml)
and ``run(params, inputs, outputs, tracker) -> summary``. ``stage_main`` does the rest.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hggt import tracking
from hggt.io import write_json
from hggt.params import Params, ParamsError, load_params

METRICS_DIR = Path("data/metrics")


def select(params: Params, keys: Sequence[str]) -> dict[str, Any]:
    """Resolve dotted keys (``"ingest"``, ``"extract_patches.crop_size"``) to plain values."""
    from hggt.params import to_dict

    data = to_dict(params)
    out: dict[str, Any] = {}
    for key in keys:
        value: Any = data
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                raise KeyError(f"params key {key!r} does not exist")
            value = value[part]
        out[key] = value
    return out


def resolve(template: str, key: str | None, item: Mapping[str, Any] | None) -> str:
    """Fill DVC ``foreach`` placeholders: ``${key}`` and ``${item.<field>}``."""
    out = template.replace("${key}", key or "")
    for k, v in (item or {}).items():
        out = out.replace(f"${{item.{k}}}", str(v))
    return out


def stage_main(
    stage: str,
    run: Callable[..., dict[str, Any]],
    params_keys: Sequence[str],
    deps: Mapping[str, str],
    outs: Mapping[str, str],
    argv: Sequence[str] | None = None,
    items: Mapping[str, Mapping[str, Any]] | None = None,
    run_name: Callable[[str | None], str] | None = None,
) -> dict[str, Any]:
    """Parse args, load params, open tracking, call ``run``, write ``data/metrics/<stage>.json``.

    For a DVC ``foreach`` stage, ``items`` maps each key to its fields; ``--item KEY`` picks one,
    paths and params keys are resolved for it, ``run`` receives ``item=KEY``, and the metrics
    file is ``data/metrics/<stage>@<KEY>.json``.
    """
    parser = argparse.ArgumentParser(prog=f"hggt {stage}", description=f"Run the {stage!r} stage.")
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: params.yaml)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    if items is not None:
        parser.add_argument(
            "--item", required=True, choices=sorted(items), help="which foreach item"
        )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        params = load_params(args.params)
    except ParamsError as exc:
        raise SystemExit(f"{stage}: {exc}") from None
    key = getattr(args, "item", None)
    item = items[key] if items is not None else None
    inputs = {k: Path(resolve(v, key, item)) for k, v in deps.items()}
    outputs = {k: Path(resolve(v, key, item)) for k, v in outs.items()}
    keys = [resolve(k, key, item) for k in params_keys]
    full = f"{stage}@{key}" if key else stage
    kwargs = {"item": key} if key else {}
    start = time.perf_counter()
    with tracking.open_run(params.tracking, run_name(key) if run_name else full, full) as tracker:
        tracker.log_params(select(params, keys))
        summary = run(params, inputs, outputs, tracker, **kwargs)
        seconds = round(time.perf_counter() - start, 3)
        tracker.log_metrics({k: v for k, v in summary.items() if _is_number(v)})
        tracker.log_metrics({"seconds": seconds})
    # The DVC metrics file holds only what the params determine, so two runs give the same
    # dvc.lock; wall time goes to MLflow and to an undeclared file beside it.
    write_json(METRICS_DIR / f"{full}.json", summary)
    write_json(METRICS_DIR / "timings" / f"{full}.json", {"seconds": seconds})
    print(f"{full}: " + ", ".join(f"{k}={v}" for k, v in {**summary, "seconds": seconds}.items()))
    return {**summary, "seconds": seconds}


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)
