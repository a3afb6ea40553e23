"""The report's content: Table 3 beside the paper's, relative improvements, figures, md/HTML.

Pure functions: numbers, arrays and dataclasses in; strings and PNG bytes out. The stage
(``hggt/stages/report.py``) reads the files and writes the results.

* The paper's numbers are the supplement's Table 3 and the sentence above it (Section 7,
  ``shared/seed/hggt_supplement.txt``): "a clear improvement in LPIPS/DISTS (about
  24.54%/23.03% and 25.64%/26.53% on RRDB and SwinIR, respectively)". Three of those four are
  (Ori − Pos) / Ori of Table 3; the fourth is not: SwinIR's DISTS gives (0.1620 − 0.1227) /
  0.1620 = 24.26 %, so the report prints both the sentence's value and the one Table 3 implies.
* Figures are drawn with matplotlib's Agg canvas (no pyplot, no global backend switch) and
  saved without the "Software" PNG tag, so equal inputs give equal bytes.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

METRICS = ("psnr", "ssim", "lpips", "dists")
METRIC_LABELS = {"psnr": "PSNR↑", "ssim": "SSIM↑", "lpips": "LPIPS↓", "dists": "DISTS↓"}
LOWER_IS_BETTER = {"psnr": False, "ssim": False, "lpips": True, "dists": True}
ARCHS = ("rrdb", "swinir")
MODES = ("original", "positive", "posneg")
ARCH_LABELS = {"rrdb": "RRDB-GAN", "swinir": "SwinIR-GAN"}
MODE_LABELS = {"original": "Original HR", "positive": "Positive GT", "posneg": "Pos+Neg GT"}
MODE_SHORT = {"original": "Ori", "positive": "Pos", "posneg": "Pos+Neg"}
BICUBIC = "bicubic"
MISSING = "—, run missing"
DECIMALS = 4  # the paper prints four decimals

# Supplement Table 3 (PSNR/SSIM/LPIPS/DISTS against the positive GTs of Test-100).
PAPER_TABLE3: dict[tuple[str, str], dict[str, float]] = {
    ("rrdb", "original"): {"psnr": 22.6388, "ssim": 0.6454, "lpips": 0.2408, "dists": 0.1676},
    ("rrdb", "positive"): {"psnr": 22.2378, "ssim": 0.6400, "lpips": 0.1817, "dists": 0.1290},
    ("rrdb", "posneg"): {"psnr": 22.2453, "ssim": 0.6405, "lpips": 0.1806, "dists": 0.1290},
    ("swinir", "original"): {"psnr": 22.7147, "ssim": 0.6516, "lpips": 0.2274, "dists": 0.1620},
    ("swinir", "positive"): {"psnr": 22.3027, "ssim": 0.6474, "lpips": 0.1691, "dists": 0.1227},
    ("swinir", "posneg"): {"psnr": 22.2733, "ssim": 0.6476, "lpips": 0.1688, "dists": 0.1227},
}
# The supplement's sentence: Ori → Pos improvements in percent, as printed.
PAPER_RELATIVE_PRINTED = {
    "rrdb": {"lpips": 24.54, "dists": 23.03},
    "swinir": {"lpips": 25.64, "dists": 26.53},
}

LABEL_SOURCES = {
    "proxy": "proxy labels — simulated annotators, not human judgements",
    "tool": "human labels collected with hggt's annotation tool",
    "hggt_release": "human labels of the released HGGT dataset",
}

Scores = Mapping[str, float]


def run_name(arch: str, mode: str) -> str:
    """The run (model file, MLflow run, evaluate item) of an (arch, mode) cell: ``rrdb-posneg``."""
    return f"{arch}-{mode}"


# --------------------------------------------------------------------------- numbers


def relative_improvement(base: float, new: float) -> float:
    """Improvement of ``new`` over ``base`` in percent for a lower-is-better metric:
    100 · (base − new) / base (the supplement's "24.54 %" is Ori 0.2408 → Pos 0.1817)."""
    if base == 0 or not (math.isfinite(base) and math.isfinite(new)):
        return math.nan
    return 100.0 * (base - new) / base


def format_percent(value: float | None) -> str:
    """``24.5432`` → ``"24.54 %"`` (the supplement's two decimals); ``"—"`` when unknown."""
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.2f} %"


def format_value(value: float | None) -> str:
    """Four decimals, like Table 3; ``inf`` for identical images; ``"—"`` when unknown."""
    if value is None or math.isnan(value):
        return "—"
    if math.isinf(value):
        return "inf"
    return f"{value:.{DECIMALS}f}"


@dataclass(frozen=True)
class Table3Row:
    """One row of Table 3: our scores (None: the run is missing) and the paper's."""

    arch: str
    mode: str
    ours: dict[str, float] | None
    paper: dict[str, float]


def table3(means: Mapping[str, Scores]) -> list[Table3Row]:
    """Table 3's six rows in the paper's order from ``{run name: {metric: mean}}``."""
    rows = []
    for arch in ARCHS:
        for mode in MODES:
            got = means.get(run_name(arch, mode))
            ours = {m: float(got[m]) for m in METRICS} if got is not None else None
            rows.append(Table3Row(arch, mode, ours, dict(PAPER_TABLE3[(arch, mode)])))
    return rows


def improvements(
    means: Mapping[str, Scores], base_mode: str, new_mode: str
) -> dict[str, dict[str, float | None]]:
    """Per arch, the relative LPIPS/DISTS improvement (percent) of ``new_mode`` over
    ``base_mode``; None where either run is missing."""
    out: dict[str, dict[str, float | None]] = {}
    for arch in ARCHS:
        base, new = means.get(run_name(arch, base_mode)), means.get(run_name(arch, new_mode))
        out[arch] = {
            m: (relative_improvement(base[m], new[m]) if base and new else None)
            for m in ("lpips", "dists")
        }
    return out


def paper_means() -> dict[str, dict[str, float]]:
    """The paper's Table 3 keyed like our means (``{run name: scores}``)."""
    return {run_name(a, m): dict(v) for (a, m), v in PAPER_TABLE3.items()}


def improvement_sentence(imp: Mapping[str, Mapping[str, float | None]]) -> str:
    """``"24.54 %/23.03 % and 25.64 %/24.26 % on RRDB and SwinIR, respectively"``."""
    parts = [f"{format_percent(imp[a]['lpips'])}/{format_percent(imp[a]['dists'])}" for a in ARCHS]
    return f"{parts[0]} and {parts[1]} on RRDB and SwinIR, respectively"


def improvement_paragraphs(means: Mapping[str, Scores]) -> list[str]:
    """The supplement's Section 7 sentences, with our numbers beside the paper's."""
    ours = improvements(means, "original", "positive")
    paper = improvements(paper_means(), "original", "positive")
    printed = PAPER_RELATIVE_PRINTED
    out = [
        "Training with the positive GTs instead of the original HR patches changes LPIPS/DISTS "
        f"by {improvement_sentence(ours)} (positive = better). Paper, as printed: about "
        f"{improvement_sentence(printed)}; recomputed from its Table 3: "
        f"{improvement_sentence(paper)} (the printed SwinIR DISTS value, "
        f"{format_percent(printed['swinir']['dists'])}, does not follow from Table 3's "
        "0.1620 → 0.1227)."
    ]
    ours_n = improvements(means, "positive", "posneg")
    paper_n = improvements(paper_means(), "positive", "posneg")
    out.append(
        "Adding the negative GTs (Pos → Pos+Neg) changes LPIPS/DISTS by a further "
        f"{improvement_sentence(ours_n)}. Paper, recomputed from Table 3: "
        f"{improvement_sentence(paper_n)}."
    )
    missing = [run_name(a, m) for a in ARCHS for m in MODES if run_name(a, m) not in means]
    if missing:
        out.append(f"Missing runs (shown as “—”): {', '.join(missing)}.")
    return out


def label_source_text(source: str) -> str:
    """What the labels behind every number are, for the report's first lines."""
    parts = [s for s in source.split("+") if s]
    if not parts:
        return "unknown label source"
    return "; ".join(LABEL_SOURCES.get(p, f"labels from {p!r}") for p in parts)


# --------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class Table:
    """A rendered-agnostic table: header cells and rows of text cells."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    missing_rows: frozenset[int] = frozenset()  # indices of rows that mark a missing run


def table3_table(rows: Sequence[Table3Row], bicubic: Scores | None) -> Table:
    """Table 3 in the paper's layout: ours in four columns, the paper's in its own one."""
    header = (
        "Method",
        "Train dataset",
        *(METRIC_LABELS[m] for m in METRICS),
        "Paper PSNR/SSIM/LPIPS/DISTS",
    )
    cells: list[tuple[str, ...]] = []
    missing: set[int] = set()
    for r in rows:
        paper = "/".join(format_value(r.paper[m]) for m in METRICS)
        if r.ours is None:
            ours = (MISSING, *("—" for _ in METRICS[1:]))
            missing.add(len(cells))
        else:
            ours = tuple(format_value(r.ours[m]) for m in METRICS)
        cells.append((ARCH_LABELS[r.arch], MODE_LABELS[r.mode], *ours, paper))
    if bicubic is not None:
        cells.append(("Bicubic", "—", *(format_value(bicubic[m]) for m in METRICS), "not reported"))
    return Table(header, tuple(cells), frozenset(missing))


def reference_table(means: Mapping[str, Scores], with_bicubic: bool) -> Table:
    """Ours only (e.g. against the original HR): one row per run, missing runs marked."""
    header = ("Method", "Train dataset", *(METRIC_LABELS[m] for m in METRICS))
    cells: list[tuple[str, ...]] = []
    missing: set[int] = set()
    for arch in ARCHS:
        for mode in MODES:
            got = means.get(run_name(arch, mode))
            if got is None:
                vals = (MISSING, *("—" for _ in METRICS[1:]))
                missing.add(len(cells))
            else:
                vals = tuple(format_value(got[m]) for m in METRICS)
            cells.append((ARCH_LABELS[arch], MODE_LABELS[mode], *vals))
    if with_bicubic and BICUBIC in means:
        cells.append(("Bicubic", "—", *(format_value(means[BICUBIC][m]) for m in METRICS)))
    return Table(header, tuple(cells), frozenset(missing))


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(table: Table) -> str:
    lines = [
        "| " + " | ".join(_md_escape(h) for h in table.header) + " |",
        "|" + "|".join("---" for _ in table.header) + "|",
    ]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


def html_table(table: Table, table_id: str, caption: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = []
    for i, row in enumerate(table.rows):
        cls = ' class="missing"' if i in table.missing_rows else ""
        tds = "".join(f"<td>{html.escape(c)}</td>" for c in row)
        body.append(f"<tr{cls}>{tds}</tr>")
    return (
        f'<table id="{html.escape(table_id)}"><caption>{html.escape(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


# --------------------------------------------------------------------------- choosing examples


def pick_evenly(ids: Sequence[str], n: int) -> list[str]:
    """``n`` of the sorted ``ids`` spread evenly from first to last (all of them when fewer):
    a choice that depends on no score, so no cherry-picking."""
    ordered = sorted(ids)
    if n <= 0 or not ordered:
        return []
    if n >= len(ordered):
        return ordered
    idx = np.round(np.linspace(0, len(ordered) - 1, n)).astype(int)
    return [ordered[i] for i in idx]


def textured_window(img: np.ndarray, size: int) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of the ``size``² window with the most gradient energy
    (the zoom-in of a Fig. 7-style crop); the whole image when it is not larger than ``size``.
    Candidate windows start on a grid of ``size // 4`` px; ties go to the first (top-left)."""
    h, w = img.shape[:2]
    if h <= size and w <= size:
        return 0, 0, h, w
    sh, sw = min(size, h), min(size, w)
    gray = img.astype(np.float64).mean(axis=2) if img.ndim == 3 else img.astype(np.float64)
    energy = np.zeros_like(gray)
    energy[:, 1:] += np.abs(np.diff(gray, axis=1))
    energy[1:, :] += np.abs(np.diff(gray, axis=0))
    integral = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    step = max(1, size // 4)
    tops = sorted({*range(0, h - sh + 1, step), h - sh})
    lefts = sorted({*range(0, w - sw + 1, step), w - sw})
    best, box = -1.0, (0, 0, sh, sw)
    for t in tops:
        for left in lefts:
            total = (
                integral[t + sh, left + sw]
                - integral[t, left + sw]
                - integral[t + sh, left]
                + integral[t, left]
            )
            if total > best:
                best, box = float(total), (t, left, sh, sw)
    return box


# --------------------------------------------------------------------------- figures


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig) -> bytes:  # noqa: ANN001 - a matplotlib Figure
    """The figure as PNG bytes; no "Software" tag, so equal figures give equal bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def _axes_off(ax, title: str) -> None:  # noqa: ANN001 - a matplotlib Axes
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def _show(ax, img: np.ndarray | None, title: str, missing: str = "run missing") -> None:  # noqa: ANN001
    _axes_off(ax, title)
    if img is None:
        ax.set_facecolor("#eeeeee")
        ax.text(0.5, 0.5, missing, ha="center", va="center", fontsize=8, transform=ax.transAxes)
        return
    ax.imshow(img, interpolation="nearest", cmap="gray" if img.ndim == 2 else None)


def image_grid(
    rows: Sequence[tuple[str, Sequence[np.ndarray | None]]],
    columns: Sequence[str],
    cell: float = 1.8,
) -> bytes:
    """A grid of images (Fig. 7 style): row labels on the left, column titles on top; a None
    cell is drawn as a grey "run missing" box."""
    fig = _new_figure(cell * len(columns) + 0.8, cell * len(rows) + 0.4)
    axes = fig.subplots(len(rows), len(columns), squeeze=False)
    for i, (label, images) in enumerate(rows):
        for j, img in enumerate(images):
            _show(axes[i][j], img, columns[j] if i == 0 else "")
        axes[i][0].set_ylabel(label, fontsize=7)
    fig.subplots_adjust(left=0.08, right=0.99, top=0.94, bottom=0.01, wspace=0.04, hspace=0.06)
    return png_bytes(fig)


@dataclass(frozen=True)
class Fig3Row:
    """One row of the Fig. 3-style panel (SPEC §6 maps of one training group)."""

    label: str
    original: np.ndarray  # (H, W, 3) uint8
    positive: np.ndarray
    negative: np.ndarray
    m_neg: np.ndarray  # (H, W) float
    m_pos: np.ndarray
    m_ind: np.ndarray  # (H, W) in {0, 1}


def negative_panel(rows: Sequence[Fig3Row]) -> bytes:
    """Original, positive GT, negative GT, M^Neg, M^Pos, M^Ind per row (supplement Fig. 3).

    M^Neg and M^Pos of a row share one colour scale (0 to the larger maximum), so the
    comparison that M^Ind makes is visible."""
    columns = ("Original HR", "Positive GT", "Negative GT", "M^Neg", "M^Pos", "M^Ind")
    fig = _new_figure(1.8 * len(columns) + 0.8, 1.8 * len(rows) + 0.4)
    axes = fig.subplots(len(rows), len(columns), squeeze=False)
    for i, r in enumerate(rows):
        vmax = float(max(r.m_neg.max(), r.m_pos.max(), 1e-12))
        for j, img in enumerate((r.original, r.positive, r.negative)):
            _show(axes[i][j], img, columns[j] if i == 0 else "")
        for j, m in ((3, r.m_neg), (4, r.m_pos)):
            _axes_off(axes[i][j], columns[j] if i == 0 else "")
            axes[i][j].imshow(m, cmap="magma", vmin=0.0, vmax=vmax, interpolation="nearest")
        _axes_off(axes[i][5], columns[5] if i == 0 else "")
        axes[i][5].imshow(r.m_ind, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[i][0].set_ylabel(r.label, fontsize=7)
    fig.subplots_adjust(left=0.08, right=0.99, top=0.94, bottom=0.01, wspace=0.04, hspace=0.06)
    return png_bytes(fig)


def degradation_text(row: Mapping[str, object]) -> str:
    """One LR input's sampled degradation (a ``degradations.parquet`` row), two short lines."""
    kind = str(row["kernel_kind"])
    if kind == "sinc":
        blur = f"sinc k={row['kernel_size']} ωc={float(row['omega_c']):.2f}"
    elif kind == "iso":
        blur = f"iso k={row['kernel_size']} σ={float(row['sigma_x']):.2f}"
    else:
        blur = (
            f"aniso k={row['kernel_size']} σ={float(row['sigma_x']):.2f}/"
            f"{float(row['sigma_y']):.2f} θ={float(row['theta']):.2f}"
        )
    resize = f"{row['resize_kind']} ×{float(row['resize_scale']):.2f} {row['resize_mode']}"
    if row["noise_kind"] == "gaussian":
        noise = f"gauss σ={float(row['noise_sigma']):.1f}"
    else:
        noise = f"poisson {float(row['poisson_scale']):.2f}"
    if bool(row["gray_noise"]):
        noise += " gray"
    return f"{blur}; {resize}\n{noise}; JPEG q={row['jpeg_quality']}"


def lr_panel(items: Sequence[tuple[str, np.ndarray, str]]) -> bytes:
    """Synthesised LR inputs with their degradation parameters (supplement Fig. 4 style)."""
    n = len(items)
    fig = _new_figure(2.6 * n, 3.2)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (name, img, text) in zip(axes, items, strict=True):
        _show(ax, img, name)
        ax.set_xlabel(text, fontsize=6)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.2, wspace=0.08)
    return png_bytes(fig)


def metric_bars(means: Mapping[str, Scores], title: str) -> bytes:
    """Four panels (PSNR, SSIM, LPIPS, DISTS): Ori/Pos/Pos+Neg bars per backbone, the bicubic
    baseline as a dashed line; a missing run leaves its bar out and says so."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig = _new_figure(11, 3.0)
    axes = fig.subplots(1, len(METRICS))
    width = 0.26
    colours = {"original": "#8c8c8c", "positive": "#4c72b0", "posneg": "#dd8452"}
    for ax, m in zip(axes, METRICS, strict=True):
        shown = []
        for k, mode in enumerate(MODES):
            for i, arch in enumerate(ARCHS):
                x = i + (k - 1) * width
                got = means.get(run_name(arch, mode))
                if got is None or not math.isfinite(got[m]):
                    ax.text(  # x in data units, y at the bottom of the axes whatever the limits
                        x,
                        0.02,
                        "missing",
                        rotation=90,
                        ha="center",
                        va="bottom",
                        fontsize=6,
                        transform=ax.get_xaxis_transform(),
                    )
                    continue
                ax.bar(x, got[m], width, color=colours[mode])
                shown.append(got[m])
        if BICUBIC in means and math.isfinite(means[BICUBIC][m]):
            ax.axhline(means[BICUBIC][m], color="k", ls="--", lw=0.8)
            shown.append(means[BICUBIC][m])
        ax.set_xticks(range(len(ARCHS)), [ARCH_LABELS[a] for a in ARCHS], fontsize=7)
        ax.set_title(METRIC_LABELS[m], fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
        if shown and m in ("psnr", "ssim"):
            lo, hi = min(shown), max(shown)
            pad = 0.1 * (hi - lo) + 1e-3
            ax.set_ylim(lo - 3 * pad, hi + pad)  # show the differences, not the offset from 0
    handles = [Patch(color=colours[mode], label=MODE_SHORT[mode]) for mode in MODES]
    handles.append(Line2D([], [], color="k", ls="--", lw=0.8, label="Bicubic"))
    fig.legend(handles=handles, loc="upper right", fontsize=7, ncol=len(handles))
    fig.suptitle(title, fontsize=9, x=0.01, ha="left")
    fig.subplots_adjust(left=0.05, right=0.99, top=0.8, bottom=0.12, wspace=0.35)
    return png_bytes(fig)


CURVE_KEYS = ("l1", "perceptual", "gan_g", "neg", "d_real", "d_fake", "val_psnr")


def training_curves(
    curves: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]], empty_note: str = ""
) -> bytes:
    """``curves_figure`` as PNG bytes."""
    return png_bytes(curves_figure(curves, empty_note))


def curves_figure(
    curves: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]], empty_note: str = ""
):  # noqa: ANN201 - a matplotlib Figure
    """One panel per logged quantity (l1, perceptual, gan_g, neg, d_real, d_fake, val_psnr),
    one line per run, a run's colour the same in every panel; without any curve, a panel that
    says ``empty_note`` (so the file, which ``dvc plots`` shows, always exists)."""
    keys = [k for k in CURVE_KEYS if any(curves[r].get(k) for r in curves)]
    if not keys:
        fig = _new_figure(6, 1.2)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_axis_off()
        text = empty_note or "no training curves"
        ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=8, wrap=True)
        return fig
    n = max(1, len(keys))
    cols = min(4, n)
    nrows = -(-n // cols)
    fig = _new_figure(3.0 * cols, 2.4 * nrows)
    axes = list(fig.subplots(nrows, cols, squeeze=False).flat)
    # One colour per run in every panel (the legend is drawn once), even where a run has no
    # line, e.g. ``neg`` exists only for the posneg runs.
    colours = {run: f"C{i}" for i, run in enumerate(sorted(curves))}
    for ax, key in zip(axes, keys, strict=False):
        for run in sorted(curves):
            pts = curves[run].get(key)
            if pts:
                steps, vals = zip(*pts, strict=True)
                ax.plot(steps, vals, lw=1.0, label=run, color=colours[run])
        ax.set_title(key, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("iteration", fontsize=7)
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    first = fig.axes[0]
    if first.get_legend_handles_labels()[0]:
        first.legend(fontsize=6)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- documents


@dataclass(frozen=True)
class FigureDoc:
    """A figure of the report: its file stem, heading and caption; no PNG → the note instead."""

    name: str
    title: str
    caption: str
    png: bytes | None
    note: str = ""


@dataclass(frozen=True)
class ReportDoc:
    """Everything the md and HTML versions show."""

    label_source: str
    settings: str  # how the metrics were computed
    test_images: int
    table3: Table
    hr_table: Table
    paragraphs: tuple[str, ...]
    figures: tuple[FigureDoc, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)


TITLE = "HGGT reproduction — evaluation report"
TABLE3_CAPTION = (
    "Table 3: RRDB-GAN and SwinIR-GAN trained on the original HR patches, the positive GTs, "
    "and positive + negative GTs; scores against every effective-positive GT of a test group, "
    "averaged over them, then over the test images. Right column: the paper's supplement."
)
HR_CAPTION = "The same SR images scored against the original HR patch (not in the paper)."


def _label_line(doc: ReportDoc) -> str:
    return f"Label source: {label_source_text(doc.label_source)}."


def render_markdown(doc: ReportDoc) -> str:
    """The report as Markdown; figures are linked as ``figures/<name>.png``."""
    out = [f"# {TITLE}", "", f"**{_label_line(doc)}**", ""]
    out += [f"Test images: {doc.test_images}. Metrics: {doc.settings}.", ""]
    out += ["## Table 3", "", TABLE3_CAPTION, "", markdown_table(doc.table3), ""]
    out += [p + "\n" for p in doc.paragraphs]
    out += ["## Against the original HR", "", HR_CAPTION, "", markdown_table(doc.hr_table), ""]
    for f in doc.figures:
        out += [f"## {f.title}", "", f.caption, ""]
        if f.png is not None:
            out += [f"![{f.title}](figures/{f.name}.png)", ""]
        if f.note:
            out += [f"*{f.note}*", ""]
    if doc.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in doc.notes] + [""]
    return "\n".join(out).rstrip() + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
.source{padding:.6em 1em;border-left:4px solid #c44;background:#fbeaea;font-weight:600}
.source.human{border-color:#4a4;background:#eaf6ea}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}
caption{caption-side:top;text-align:left;font-size:.9em;color:#555;padding-bottom:.4em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th:nth-child(-n+2),td:nth-child(-n+2){text-align:left}
tr.missing td{background:#f4f4f4;color:#888;font-style:italic}
figure{margin:1.5em 0}figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{font-size:.9em;color:#555}.note{font-style:italic;color:#666}
"""


def render_html(doc: ReportDoc) -> str:
    """A self-contained HTML page: inline CSS, figures embedded as base64 PNG, no scripts."""
    human = all(s in ("tool", "hggt_release") for s in doc.label_source.split("+"))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(TITLE)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(TITLE)}</h1>",
        f'<p class="source{" human" if human else ""}" id="label-source">'
        f"{html.escape(_label_line(doc))}</p>",
        f"<p>Test images: {doc.test_images}. Metrics: {html.escape(doc.settings)}.</p>",
        "<h2>Table 3</h2>",
        html_table(doc.table3, "table3", TABLE3_CAPTION),
        *(f"<p>{html.escape(p)}</p>" for p in doc.paragraphs),
        "<h2>Against the original HR</h2>",
        html_table(doc.hr_table, "table-hr", HR_CAPTION),
    ]
    for f in doc.figures:
        parts.append(f'<h2>{html.escape(f.title)}</h2><figure id="fig-{html.escape(f.name)}">')
        if f.png is not None:
            data = base64.b64encode(f.png).decode("ascii")
            parts.append(f'<img src="data:image/png;base64,{data}" alt="{html.escape(f.title)}">')
        parts.append(f"<figcaption>{html.escape(f.caption)}</figcaption>")
        if f.note:
            parts.append(f'<p class="note">{html.escape(f.note)}</p>')
        parts.append("</figure>")
    if doc.notes:
        parts.append("<h2>Notes</h2><ul>")
        parts += [f"<li>{html.escape(n)}</li>" for n in doc.notes]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
