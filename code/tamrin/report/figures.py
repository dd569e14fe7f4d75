"""The report's figures, drawn from results with matplotlib (Agg), each only when stale. Line and bar charts are
SVG (text converted to paths, so no font is needed to show them); dense point clouds are PNG; all share `STYLE`.
Labels are English: matplotlib cannot shape Persian script (the Persian captions sit under the figures).

A figure is stale when its file is missing or its key changed: the key hashes the figure's data (the spec's
arguments), this module's code (by syntax tree, through codehash, so a comment or a reworded docstring redraws
nothing) and the matplotlib version. Each figure is drawn into a temporary file renamed over its path, so a
reader (Typst, the zip) sees the old figure or the whole new one, never half of it.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..atomic import write_text
from ..codehash import hash_files
from ..contract.facts import FLOW_METHOD_LABELS, FLOW_PAIR_LABELS, QTYPES

LOSS_FIGURE = "loss.svg"  # the training-loss figure under figures/ (the notebook shows this same file)
WIDTH_IN = 6.2  # text width of the A4 page with 2.5 cm margins, in inches
COLORS = {"base": "#9a9a9a", "finetuned": "#1f5fa8", "raw": "#9fb7d6", "smooth": "#1f5fa8",
          "icfm": "#d9731a", "otcfm": "#1f5fa8", "lipman": "#6b9e3a", "source": "#9a9a9a", "target": "#202020",
          "heldout": "#d9731a", "unquantized": "#d9731a"}
STYLE = {
    "font.family": "DejaVu Sans", "font.size": 8.5, "axes.titlesize": 9, "axes.labelsize": 8.5,
    "legend.fontsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.spines.top": False,
    "axes.spines.right": False, "axes.grid": True, "grid.color": "#e3e3e3", "grid.linewidth": 0.6,
    "axes.axisbelow": True, "figure.dpi": 100, "savefig.bbox": "tight", "savefig.pad_inches": 0.03,
    "svg.fonttype": "path", "svg.hashsalt": "tamrin", "lines.linewidth": 1.4,
}


def _figure(figsize: tuple[float, float]) -> Any:
    """A Figure in the report's style, without pyplot (no GUI backend, no global figure registry, and about a
    second less to import)."""
    import matplotlib
    from matplotlib.figure import Figure

    matplotlib.rcParams.update(STYLE)
    return Figure(figsize=figsize)


def _subplots(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (WIDTH_IN, 2.6)) -> tuple[Any, Any]:
    fig = _figure(figsize)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _save(fig: Any, path: Path) -> Path:
    """Write `fig`, cropped to its drawn content (STYLE's savefig.bbox, which costs a layout pass: a figure laid
    out by hand would save it, but would change its margins). PNGs at 200 dpi with light compression (Typst
    re-encodes them for the PDF anyway)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    png = path.suffix == ".png"
    meta = {"Software": None} if png else {"Date": None, "Creator": None}
    fig.savefig(path, metadata=meta, dpi=200 if png else None, **({"pil_kwargs": {"compress_level": 1}} if png else {}))
    return path


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Centred mean over `window` values (narrower near the ends, so it does not lag the curve or invent
    values beyond the data); same length as `values`."""
    n, half = len(values), window // 2
    prefix = [0.0, *itertools.accumulate(values)]
    out = []
    for i in range(n):
        lo, hi = max(0, i - half), min(n, i + (window - half))
        reach = min(i - lo, hi - 1 - i)  # symmetric around i
        lo, hi = i - reach, i + reach + 1
        out.append((prefix[hi] - prefix[lo]) / (hi - lo))
    return out


def smoothing_window(n_steps: int, configured: int) -> int:
    """The configured window, but never more than a fifth of the run (a 60-step demo still shows a trend)."""
    return max(1, min(configured, n_steps // 5 or 1))


def loss_figure(loss_rows: list[dict], window: int, heldout_rows: Sequence[dict], path: Path) -> Path:
    """The loss of every optimizer step; a skipped step (non-finite loss, logged as null) has no point. With
    `heldout_rows`, the loss on the held-out slice of the train split at each evaluation, on the same axes."""
    kept = [r for r in loss_rows if r["loss"] is not None]
    steps = [r["step"] for r in kept]
    loss = [r["loss"] for r in kept]
    fig, axes = _subplots(figsize=(WIDTH_IN, 2.3))
    ax = axes[0][0]
    ax.plot(steps, loss, color=COLORS["raw"], linewidth=0.9, label="loss per optimizer step")
    ax.plot(steps, moving_average(loss, window), color=COLORS["smooth"], linewidth=1.8,
            label=f"centred moving average ({window} steps)")
    held = [r for r in heldout_rows if r["loss"] is not None]
    if held:
        ax.plot([r["step"] for r in held], [r["loss"] for r in held], color=COLORS["heldout"], linewidth=1.4,
                marker="o", markersize=3.5,
                label=f"held-out loss ({held[0]['n']} train-split questions, not trained on)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (answer tokens)")
    ax.set_xlim(min(steps + [r["step"] for r in held]), max(steps))
    ax.legend(frameon=False, loc="upper right")
    return _save(fig, path)


def per_qtype_figure(qtypes: list[str], base: dict, finetuned: dict, baseline: dict | None, path: Path) -> Path:
    """Grouped bars: exact match of the base and the fine-tuned model per question type (n under each name); the
    majority-answer baseline, when given, is a dashed tick across each type's pair of bars."""
    fig, axes = _subplots(figsize=(WIDTH_IN, 2.3))
    ax = axes[0][0]
    xs = range(len(qtypes))
    w = 0.38
    for k, (name, m) in enumerate((("base", base), ("finetuned", finetuned))):
        vals = [100 * m.get(t, {}).get("exact_match", 0.0) for t in qtypes]  # 0 where a type is absent
        bars = ax.bar([x + (k - 0.5) * w for x in xs], vals, width=w, color=COLORS[name],
                      label="base model" if name == "base" else "fine-tuned (LoRA)")
        # Every bar carries its value, so a series of zeros is visibly zero rather than missing.
        ax.bar_label(bars, labels=[f"{v:.0f}" for v in vals], padding=1.5, fontsize=6.5, color="#333333")
    if baseline:
        for x, t in zip(xs, qtypes):
            if t in baseline:
                ax.hlines(100 * baseline[t]["exact_match"], x - w, x + w, colors="#222222", linestyles=(0, (3, 2)),
                          linewidth=1.1, label="majority answer of the type (train)" if x == 0 else None)
    ns = [finetuned.get(t, base.get(t, {})).get("n", 0) for t in qtypes]
    ax.set_xticks(list(xs), [f"{t.replace('_', chr(10))}\n(n={n})" for t, n in zip(qtypes, ns)], fontsize=7.5)
    ax.set_ylabel("exact match (%)")
    ax.set_ylim(0, 108)
    ax.set_yticks(range(0, 101, 20))
    ax.grid(axis="x", visible=False)
    ax.legend(frameon=False, loc="upper right", ncols=3 if baseline else 2, fontsize=7)
    return _save(fig, path)


def _method_color(method: str) -> str:
    return COLORS.get(method, "#555555")


class _PanelGrid:
    """Small multiples of point clouds drawn in ONE axes whose data units are inches: creating an Axes per
    panel costs ~15 ms each, and tight_layout draws every panel again, so the grid is laid out by hand (about
    2× faster for the flow figures). Rows are counted from the top; `title_space`
    is the room above a row for panel titles, `gap` the room between panels."""

    def __init__(self, nrows: int, ncols: int, panel: float, *, left: float, right: float, top: float,
                 bottom: float, gap: float, title_space: list[float]) -> None:
        self.panel, self.left, self.gap = panel, left, gap
        self.right_edge = left + ncols * panel + (ncols - 1) * gap  # of the last column
        self.width = self.right_edge + right
        height = top + nrows * panel + sum(title_space) + (nrows - 1) * gap + bottom
        self.fig = _figure((self.width, height))
        self.ax = self.fig.add_axes((0, 0, 1, 1))
        self.ax.set_xlim(0, self.width), self.ax.set_ylim(0, height), self.ax.set_axis_off()
        self._bottoms, y = [], height - top
        for r in range(nrows):
            y -= title_space[r] + panel + (gap if r else 0)
            self._bottoms.append(y)

    def origin(self, row: int, col: int) -> tuple[float, float]:
        """Lower-left corner of a panel, in inches."""
        return self.left + col * (self.panel + self.gap), self._bottoms[row]

    def place(self, row: int, col: int, points: Any, xlim: tuple[float, float], ylim: tuple[float, float]
              ) -> tuple[Any, Any]:
        """Points (n, 2) in panel `(row, col)` coordinates; points outside the limits are dropped (they would
        spill into the neighbouring panel)."""
        import numpy as np

        pts = np.asarray(points, dtype=float).reshape(-1, 2)
        inside = (pts[:, 0] >= xlim[0]) & (pts[:, 0] <= xlim[1]) & (pts[:, 1] >= ylim[0]) & (pts[:, 1] <= ylim[1])
        pts = pts[inside]
        x0, y0 = self.origin(row, col)
        return (x0 + (pts[:, 0] - xlim[0]) / (xlim[1] - xlim[0]) * self.panel,
                y0 + (pts[:, 1] - ylim[0]) / (ylim[1] - ylim[0]) * self.panel)

    def frame(self, row: int, col: int) -> None:
        from matplotlib.patches import Rectangle

        self.ax.add_patch(Rectangle(self.origin(row, col), self.panel, self.panel, fill=False,
                                    edgecolor="#cccccc", linewidth=0.8))

    def title(self, row: int, col: int, text: str, size: float) -> None:
        x0, y0 = self.origin(row, col)
        self.ax.text(x0 + self.panel / 2, y0 + self.panel + 0.04, text, ha="center", va="bottom", fontsize=size)

    def row_label(self, rows: tuple[int, int], text: str, side: str, size: float) -> None:
        """A label along rows[0]..rows[1] (inclusive), left or right of the grid, read bottom-up / top-down."""
        top = self._bottoms[rows[0]] + self.panel
        middle = (top + self._bottoms[rows[1]]) / 2
        if side == "left":
            self.ax.text(self.left - 0.08, middle, text, rotation=90, ha="right", va="center", fontsize=size)
        else:
            self.ax.text(self.right_edge + 0.08, middle, text, rotation=270, ha="left", va="center", fontsize=size)


def flow_methods(exp: dict) -> list[str]:
    """The methods experiment.json has results for, in the order of its settings (a method with a summary
    but missing from `settings.methods`, e.g. from an edited file, still appears, after the listed ones)."""
    listed = list(exp.get("settings", {}).get("methods", []))
    present = [m for by_method in exp.get("summary", {}).values() for m in by_method]
    return list(dict.fromkeys([m for m in listed if m in present] + present))


def method_label(method: str) -> str:
    """A method's short display name ('OT-CFM (exact minibatch OT)' → 'OT-CFM'), or its key."""
    return FLOW_METHOD_LABELS.get(method, method).split(" (")[0]


def _pair_limits(whole: list[list], robust: Sequence[list] = (), clip: float = 0.5, margin: float = 0.08
                 ) -> tuple[tuple[float, float], tuple[float, float]]:
    """Common square limits for every panel of one pair, so source, target and samples compare by eye: all of
    the `whole` point sets (source and target are never cut at a panel edge) and the `clip`–(100 − `clip`) %
    range of the `robust` ones (a few stray generated samples do not shrink the rest), plus a `margin`."""
    import numpy as np

    def stack(sets: Sequence[list]) -> Any:
        arrays = [np.asarray(p, dtype=float).reshape(-1, 2) for p in sets if len(p)]
        return np.concatenate(arrays) if arrays else np.zeros((0, 2))

    full, loose = stack(whole), stack(robust)
    lo, hi = full.min(axis=0), full.max(axis=0)
    if len(loose):
        lo = np.minimum(lo, np.percentile(loose, clip, axis=0))
        hi = np.maximum(hi, np.percentile(loose, 100 - clip, axis=0))
    centre, half = (lo + hi) / 2, (hi - lo).max() / 2 * (1 + margin)
    return (centre[0] - half, centre[0] + half), (centre[1] - half, centre[1] + half)


def flow_samples_figure(exp: dict, path: Path) -> Path:
    """Per pair two rows (after one Euler step, after the adaptive dopri5 solve) and one column per method, beside
    the source (top) and target (bottom) samples; every panel of a pair on the same axes."""
    pairs = exp["settings"]["pairs"]
    samples = exp["figures"]["samples"]
    methods = [m for m in flow_methods(exp) if all(m in samples[p]["generated"] for p in pairs)]
    solvers = (("euler_1", "1 Euler step"), ("dopri5", "dopri5 (adaptive)"))
    # Room above each row: method names over the first, the small "target q" title over every second row,
    # and a wider gap between pairs.
    space = [0.3 if r == 0 else (0.2 if r % 2 else 0.32) for r in range(2 * len(pairs))]
    grid = _PanelGrid(2 * len(pairs), 1 + len(methods), 1.3, left=0.34, right=0.34, top=0.02, bottom=0.03,
                      gap=0.07, title_space=space)
    for i, pair in enumerate(pairs):
        gen = samples[pair]["generated"]
        xlim, ylim = _pair_limits([samples[pair]["source"], samples[pair]["target"]],
                                  [gen[m][s] for m in methods for s, _ in solvers])
        for r, (solver, solver_name) in enumerate(solvers):
            row = 2 * i + r
            ref_key, ref_title = (("source", "source $p_0$"), ("target", "target $q$"))[r]
            cells = [(ref_key, samples[pair][ref_key], COLORS[ref_key])]
            cells += [(m, gen[m][solver], _method_color(m)) for m in methods]
            for col, (key, pts, color) in enumerate(cells):
                grid.ax.scatter(*grid.place(row, col, pts, xlim, ylim), s=1.0, color=color, alpha=0.6,
                                linewidths=0)
                grid.frame(row, col)
                if col == 0:
                    grid.title(row, col, ref_title, 9)
                elif row == 0:
                    grid.title(row, col, method_label(key), 10)
            grid.row_label((row, row), solver_name, "right", 9)
        grid.row_label((2 * i, 2 * i + 1), FLOW_PAIR_LABELS[pair], "left", 9.5)
    return _save(grid.fig, path)


def flow_trajectories_figure(exp: dict, path: Path) -> Path:
    """Trajectories x_t of the learned ODE (dopri5 states) from source (grey) to end point (black), over faint
    target samples; rows: pairs, columns: methods, every panel of a pair on the same axes."""
    from matplotlib.collections import LineCollection

    pairs, figs = exp["settings"]["pairs"], exp["figures"]
    methods = [m for m in flow_methods(exp) if all(m in figs["trajectories"][p] for p in pairs)]
    grid = _PanelGrid(len(pairs), len(methods), 1.9, left=0.34, right=0.05, top=0.02, bottom=0.03, gap=0.07,
                      title_space=[0.3] + [0.0] * (len(pairs) - 1))
    for i, pair in enumerate(pairs):
        paths = [pt for m in methods for traj in figs["trajectories"][pair][m]["xy"] for pt in traj]
        xlim, ylim = _pair_limits([paths, figs["samples"][pair]["target"]], margin=0.06)
        for j, m in enumerate(methods):
            xy = figs["trajectories"][pair][m]["xy"]
            grid.ax.scatter(*grid.place(i, j, figs["samples"][pair]["target"], xlim, ylim), s=1, color="#dddddd",
                            linewidths=0)
            lines = [list(zip(*grid.place(i, j, traj, xlim, ylim))) for traj in xy]
            grid.ax.add_collection(LineCollection(lines, colors=_method_color(m), linewidths=0.45, alpha=0.6))
            grid.ax.scatter(*grid.place(i, j, [t[0] for t in xy], xlim, ylim), s=2.5, color=COLORS["source"],
                            zorder=3, linewidths=0)
            grid.ax.scatter(*grid.place(i, j, [t[-1] for t in xy], xlim, ylim), s=2.5, color=COLORS["target"],
                            zorder=3, linewidths=0)
            grid.frame(i, j)
            if i == 0:
                grid.title(i, j, method_label(m), 10.5)
        grid.row_label((i, i), FLOW_PAIR_LABELS[pair], "left", 9.5)
    return _save(grid.fig, path)


def sampling_floor(exp: dict) -> dict[str, float]:
    """Mean W2 between two independent held-out target sets, per pair: no sampler can score below it."""
    floors: dict[str, list[float]] = {}
    for ref in exp.get("reference", []):
        floors.setdefault(ref["pair"], []).append(ref["w2_floor"])
    return {pair: sum(v) / len(v) for pair, v in floors.items()}


def flow_w2_figure(exp: dict, path: Path) -> Path:
    """W2 to held-out target samples against the number of Euler steps (mean ± std over seeds), the adaptive
    dopri5 result (dotted) and the sampling floor (grey dashed); one panel per pair."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    pairs, floor = exp["settings"]["pairs"], sampling_floor(exp)
    fig, axes = _subplots(1, len(pairs), figsize=(WIDTH_IN, 2.2))
    markers = ("o", "s", "^", "D", "v")
    for i, pair in enumerate(pairs):
        ax = axes[0][i]
        ks: list[int] = []
        methods = [m for m in flow_methods(exp) if m in exp["w2_vs_steps"][pair]]
        for j, m in enumerate(methods):
            curve = exp["w2_vs_steps"][pair][m]
            ks = curve["steps"]
            # Curves that nearly coincide (Lipman's σ_min path and I-CFM) must not hide each other: each method
            # is shifted a little along the (log) step axis and has its own marker; Lipman's is dashed and hollow.
            shift = 1.07 ** (j - (len(methods) - 1) / 2)
            hollow = {"linestyle": "--", "markerfacecolor": "white"} if m == "lipman" else {}
            ax.errorbar([k * shift for k in ks], curve["w2_mean"], yerr=curve["w2_std"], color=_method_color(m),
                        marker=markers[j % len(markers)], markersize=3.2, capsize=2, label=method_label(m),
                        **hollow)
            if curve.get("dopri5"):
                ax.axhline(curve["dopri5"]["w2"], color=_method_color(m), linestyle=":", linewidth=1)
        if pair in floor:
            ax.axhline(floor[pair], color="#888888", linestyle="--", linewidth=0.8, label="sampling floor")
        handles, names = ax.get_legend_handles_labels()
        if any(exp["w2_vs_steps"][pair][m].get("dopri5") for m in methods):
            # One legend entry for the dotted lines, drawn in each method's colour on the plot.
            handles.append(Line2D([], [], color="#555555", linestyle=":", linewidth=1))
            names.append("dopri5 (adaptive)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        # Plain tick labels: the default log labels are mathtext (10^k), slow to typeset and too many here.
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))  # only the labelled minor ticks
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("Euler steps")
        if i == 0:
            ax.set_ylabel("$W_2$ to held-out target")
        ax.set_title(FLOW_PAIR_LABELS[pair])
        ax.legend(handles, names, frameon=False, fontsize=7, loc="upper right")
    fig.subplots_adjust(left=0.1, right=0.99, bottom=0.17, top=0.9, wspace=0.22)  # by hand: no tight_layout pass
    return _save(fig, path)


def ablation_figure(runs: list[dict[str, Any]], main_quantization: str, path: Path) -> Path:
    """Three panels over the LoRA rank (log2 axis): exact match with its 95 % bootstrap interval and ROUGE-L;
    the training loss per step (moving average) of every rank; trainable parameters."""
    fig, axes = _subplots(1, 3, figsize=(WIDTH_IN, 2.35))
    quality, losses, params = axes[0]
    main = [x for x in runs if x["quantization"] == main_quantization]
    other = [x for x in runs if x["quantization"] != main_quantization]
    ranks = [x["rank"] for x in main]
    em = [100 * x["em"] for x in main]
    err = [[100 * (x["em"] - x["em_ci"][0]) for x in main], [100 * (x["em_ci"][1] - x["em"]) for x in main]]
    quality.errorbar(ranks, em, yerr=err, color=COLORS["finetuned"], marker="o", markersize=3.5, capsize=2,
                     label="exact match (95% CI)")
    quality.plot(ranks, [100 * x["rougeL"] for x in main], color=COLORS["base"], marker="s", markersize=3,
                 linestyle="--", label="ROUGE-L F1")
    for x in other:
        quality.errorbar([x["rank"]], [100 * x["em"]], yerr=[[100 * (x["em"] - x["em_ci"][0])],
                                                             [100 * (x["em_ci"][1] - x["em"])]],
                         color=COLORS["unquantized"], marker="D", markersize=4, capsize=2,
                         label=f"exact match, {x['quantization']} base")
    quality.set_ylabel("test score (%)")
    quality.set_ylim(bottom=0)
    quality.legend(frameon=False, fontsize=6.5, loc="lower right")
    from matplotlib import colormaps

    blues = colormaps["Blues"]  # light = small rank, dark = large rank
    shades = [blues(0.4 + 0.55 * k / max(1, len(main) - 1)) for k in range(len(main))]
    for x, color in zip(main, shades):
        steps = range(1, len(x["loss"]) + 1)
        losses.plot(steps, moving_average(x["loss"], max(1, len(x["loss"]) // 10)), color=color, linewidth=1.1,
                    label=f"r = {x['rank']}")
    losses.set_xlabel("optimizer step")
    losses.set_ylabel("training loss (moving avg.)")
    losses.legend(frameon=False, fontsize=6.5, loc="upper right")
    params.plot(ranks, [x["trainable"] for x in main], color=COLORS["finetuned"], marker="o", markersize=3.5)
    params.set_yscale("log", base=2)
    params.set_ylabel("trainable parameters")
    for ax in (quality, params):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ranks, [str(r) for r in ranks])
        ax.minorticks_off()
        ax.set_xlabel("LoRA rank r")
    fig.subplots_adjust(left=0.08, right=0.99, bottom=0.2, top=0.97, wspace=0.45)
    return _save(fig, path)


@dataclass(frozen=True)
class FigureSpec:
    """One figure: the file it becomes under figures/, the function that draws it, and that function's data
    (everything the drawing depends on besides the drawing code and the matplotlib version)."""

    file: str
    draw: Callable[..., Path]
    args: tuple


def figure_specs(r: dict[str, Any], window: int) -> dict[str, FigureSpec]:
    """Every figure of the report, from the loaded results: template name → spec. The rank ablation's is left
    out when the ablation did not run (the templates say so in words instead)."""
    base_q = r["eval"]["base"]["metrics"].get("per_qtype", {})
    tuned_q = r["eval"]["finetuned"]["metrics"].get("per_qtype", {})
    qtypes = list(dict.fromkeys([t for t in QTYPES if t in base_q or t in tuned_q]
                                + sorted(set(base_q) | set(tuned_q))))
    exp = r["flow"]["experiment"]
    flow = {k: exp[k] for k in ("settings", "summary", "w2_vs_steps", "reference", "figures") if k in exp}
    ab = r["ablation"]
    runs = [{"rank": x["rank"], "quantization": x["quantization"], "em": x["exact_match"],
             "em_ci": x["exact_match_ci"], "rougeL": x["rougeL"]["f"], "trainable": x["trainable_params"],
             "loss": x["loss"]} for x in ab["runs"]]
    return {
        **({"ablation": FigureSpec("ablation_rank.svg", ablation_figure, (runs, ab["settings"]["quantization"]))}
           if ab["enabled"] and runs else {}),
        "loss": FigureSpec(LOSS_FIGURE, loss_figure, (r["finetune"]["loss"], window,
                                                      r["finetune"].get("heldout", []))),
        "per_qtype": FigureSpec("per_qtype.svg", per_qtype_figure,
                                (qtypes, base_q, tuned_q, r["eval"]["baseline"]["metrics"]["per_qtype"])),
        "flow_samples": FigureSpec("flow_samples.png", flow_samples_figure, (flow,)),
        "flow_traj": FigureSpec("flow_trajectories.png", flow_trajectories_figure, (flow,)),
        "flow_w2": FigureSpec("flow_w2.svg", flow_w2_figure, (flow,)),
    }


CACHE_FILE = ".figures-cache.json"


def draw_stale(specs: list[FigureSpec], out: Path) -> dict[str, bool]:
    """Draw the figures whose file is missing or whose key changed; returns {file: redrawn}. The cache file is
    written after each figure, so an interrupted run redraws only what it did not finish."""
    from importlib import metadata

    code = hash_files([Path(__file__)]) + metadata.version("matplotlib")
    try:
        cache = json.loads((out / CACHE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    redrawn = {}
    for spec in specs:
        data = json.dumps([spec.file, spec.draw.__name__, spec.args], sort_keys=True, default=str)
        key = hashlib.sha256((code + data).encode()).hexdigest()
        path = out / spec.file
        redrawn[spec.file] = not (cache.get(spec.file) == key and path.is_file())
        if not redrawn[spec.file]:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        drawn = spec.draw(*spec.args, path.with_name(f".drawing-{path.name}"))  # same suffix: same format
        os.replace(drawn, path)
        cache[spec.file] = key
        write_text(out / CACHE_FILE, json.dumps(cache, indent=1, sort_keys=True))
    return redrawn
