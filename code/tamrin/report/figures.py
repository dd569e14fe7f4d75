"""Figures drawn from results (matplotlib, Agg backend): one function per figure, each writing one file.

Line and bar charts are SVG (vector; text converted to paths so no font is needed to show them); dense
point clouds are PNG. Every figure uses `STYLE`, so they share fonts, sizes and colours. Labels are English:
matplotlib cannot shape Persian script, and the Persian captions sit under the figures in the report.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

WIDTH_IN = 6.2  # text width of the A4 page with 2.5 cm margins, in inches
COLORS = {"base": "#9a9a9a", "finetuned": "#1f5fa8", "raw": "#9fb7d6", "smooth": "#1f5fa8",
          "icfm": "#d9731a", "otcfm": "#1f5fa8", "lipman": "#6b9e3a", "source": "#9a9a9a", "target": "#202020"}
STYLE = {
    "font.family": "DejaVu Sans", "font.size": 8.5, "axes.titlesize": 9, "axes.labelsize": 8.5,
    "legend.fontsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.spines.top": False,
    "axes.spines.right": False, "axes.grid": True, "grid.color": "#e3e3e3", "grid.linewidth": 0.6,
    "axes.axisbelow": True, "figure.dpi": 100, "savefig.bbox": "tight", "savefig.pad_inches": 0.03,
    "svg.fonttype": "path", "svg.hashsalt": "tamrin", "lines.linewidth": 1.4,
}


def _subplots(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (WIDTH_IN, 2.6)) -> tuple[Any, Any]:
    """A Figure and a 2-D array of axes, without pyplot (no GUI backend, no global figure registry, and
    about a second less to import)."""
    import matplotlib
    from matplotlib.figure import Figure

    matplotlib.rcParams.update(STYLE)
    fig = Figure(figsize=figsize)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig: Any, path: Path, tight: bool = True) -> Path:
    """Write `fig`; `tight` crops it to its drawn content (which draws it twice), off for a figure laid out by
    hand. PNGs at 200 dpi with light compression (Typst re-encodes them for the PDF anyway)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    png = path.suffix == ".png"
    meta = {"Software": None} if png else {"Date": None, "Creator": None}
    fig.savefig(path, metadata=meta, dpi=200 if png else None, bbox_inches="tight" if tight else None,
                **({"pil_kwargs": {"compress_level": 1}} if png else {}))
    return path


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Centred mean over `window` values (narrower near the ends, so it does not lag the curve or invent
    values beyond the data); same length as `values`."""
    n, half = len(values), window // 2
    prefix = [0.0]
    for v in values:
        prefix.append(prefix[-1] + v)
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


def loss_figure(loss_rows: list[dict], window: int, path: Path) -> Path:
    steps = [r["step"] for r in loss_rows]
    loss = [r["loss"] for r in loss_rows]
    fig, axes = _subplots(figsize=(WIDTH_IN, 2.6))
    ax = axes[0][0]
    ax.plot(steps, loss, color=COLORS["raw"], linewidth=0.9, label="loss per optimizer step")
    ax.plot(steps, moving_average(loss, window), color=COLORS["smooth"], linewidth=1.8,
            label=f"centred moving average ({window} steps)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (answer tokens)")
    ax.set_xlim(min(steps), max(steps))
    ax.legend(frameon=False, loc="upper right")
    return _save(fig, path)


def per_qtype_figure(qtypes: list[str], base: dict, finetuned: dict, path: Path) -> Path:
    """Grouped bars: exact match of the base and the fine-tuned model per question type (n under each name)."""
    fig, axes = _subplots(figsize=(WIDTH_IN, 2.7))
    ax = axes[0][0]
    xs = range(len(qtypes))
    w = 0.38
    for k, (name, m) in enumerate((("base", base), ("finetuned", finetuned))):
        vals = [100 * m.get(t, {}).get("exact_match", 0.0) for t in qtypes]  # 0 where a type is absent
        ax.bar([x + (k - 0.5) * w for x in xs], vals, width=w, color=COLORS[name],
               label="base model" if name == "base" else "fine-tuned (LoRA)")
    ns = [finetuned.get(t, base.get(t, {})).get("n", 0) for t in qtypes]
    ax.set_xticks(list(xs), [f"{t.replace('_', chr(10))}\n(n={n})" for t, n in zip(qtypes, ns)], fontsize=7.5)
    ax.set_ylabel("exact match (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="x", visible=False)
    ax.legend(frameon=False, loc="upper right", ncols=2)
    return _save(fig, path)


def copy_images(results_data: Path, rel_images: list[str], dest: Path) -> list[str]:
    """Copy result images (paths relative to results/data) into figures/; returns their names under dest."""
    dest.mkdir(parents=True, exist_ok=True)
    names = []
    for rel in rel_images:
        src = results_data / rel
        name = Path(rel).name
        if not (dest / name).exists() or (dest / name).stat().st_size != src.stat().st_size:
            shutil.copyfile(src, dest / name)
        names.append(name)
    return names


# ------------------------------------------------------------------------------------------------------------
# Flow matching (question 2, part 3)
# ------------------------------------------------------------------------------------------------------------

def _method_color(method: str) -> str:
    return COLORS.get(method, "#555555")


def _short(label: str) -> str:
    """'OT-CFM (exact minibatch OT)' → 'OT-CFM'."""
    return label.split(" (")[0]


class _PanelGrid:
    """Small multiples of point clouds drawn in ONE axes whose data units are inches: creating an Axes per
    panel costs ~15 ms each, and tight_layout / bbox="tight" draw every panel again, so the grid is laid out
    by hand and drawn once (about 2× faster for the flow figures). Rows are counted from the top; `title_space`
    is the room above a row for panel titles, `gap` the room between panels."""

    def __init__(self, nrows: int, ncols: int, panel: float, *, left: float, right: float, top: float,
                 bottom: float, gap: float, title_space: list[float]) -> None:
        import matplotlib
        from matplotlib.figure import Figure

        matplotlib.rcParams.update(STYLE)
        self.panel, self.left, self.gap = panel, left, gap
        self.right_edge = left + ncols * panel + (ncols - 1) * gap  # of the last column
        self.width = self.right_edge + right
        height = top + nrows * panel + sum(title_space) + (nrows - 1) * gap + bottom
        self.fig = Figure(figsize=(self.width, height))
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


def method_label(exp: dict, method: str) -> str:
    """A method's short display name ('OT-CFM (exact minibatch OT)' → 'OT-CFM'), or its key."""
    return _short(exp.get("labels", {}).get("methods", {}).get(method, method))


def _pair_limits(point_sets: list[list], clip: float = 0.5, margin: float = 0.06
                 ) -> tuple[tuple[float, float], tuple[float, float]]:
    """Common square limits for every panel of one pair, so source, target and samples compare by eye: the
    `clip`–(100 − `clip`) % range of all points (a few stray samples do not shrink the rest)."""
    import numpy as np

    pts = np.concatenate([np.asarray(p, dtype=float).reshape(-1, 2) for p in point_sets if len(p)])
    lo, hi = np.percentile(pts, clip, axis=0), np.percentile(pts, 100 - clip, axis=0)
    centre, half = (lo + hi) / 2, (hi - lo).max() / 2 * (1 + margin)
    return (centre[0] - half, centre[0] + half), (centre[1] - half, centre[1] + half)


def flow_samples_figure(exp: dict, path: Path) -> Path:
    """Per pair two rows — after one Euler step and after the adaptive dopri5 solve — and one column per
    method, beside a first column with the source (top) and target (bottom) samples; every panel of a pair
    on the same axes (experiment.json `figures.samples`)."""
    pairs, labels = exp["settings"]["pairs"], exp["labels"]
    samples = exp["figures"]["samples"]
    methods = [m for m in flow_methods(exp) if all(m in samples[p]["generated"] for p in pairs)]
    solvers = (("euler_1", "1 Euler step"), ("dopri5", "dopri5 (adaptive)"))
    # Room above each row: method names over the first, the small "target q" title over every second row,
    # and a wider gap between pairs.
    space = [0.25 if r == 0 else (0.16 if r % 2 else 0.26) for r in range(2 * len(pairs))]
    grid = _PanelGrid(2 * len(pairs), 1 + len(methods), 1.3, left=0.3, right=0.3, top=0.02, bottom=0.03,
                      gap=0.07, title_space=space)
    for i, pair in enumerate(pairs):
        gen = samples[pair]["generated"]
        xlim, ylim = _pair_limits([samples[pair]["source"], samples[pair]["target"]]
                                  + [gen[m][s] for m in methods for s, _ in solvers])
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
                    grid.title(row, col, ref_title, 7)
                elif row == 0:
                    grid.title(row, col, method_label(exp, key), 8.5)
            grid.row_label((row, row), solver_name, "right", 7)
        grid.row_label((2 * i, 2 * i + 1), labels["pairs"][pair], "left", 7.5)
    return _save(grid.fig, path, tight=False)


def flow_trajectories_figure(exp: dict, path: Path) -> Path:
    """Trajectories x_t of the learned ODE (dopri5 states) from source (grey) to end point (black), over faint
    target samples; rows: pairs, columns: methods, every panel of a pair on the same axes."""
    from matplotlib.collections import LineCollection

    pairs, labels, figs = exp["settings"]["pairs"], exp["labels"], exp["figures"]
    methods = [m for m in flow_methods(exp) if all(m in figs["trajectories"][p] for p in pairs)]
    grid = _PanelGrid(len(pairs), len(methods), 1.9, left=0.3, right=0.05, top=0.02, bottom=0.03, gap=0.07,
                      title_space=[0.27] + [0.0] * (len(pairs) - 1))
    for i, pair in enumerate(pairs):
        paths = [pt for m in methods for traj in figs["trajectories"][pair][m]["xy"] for pt in traj]
        xlim, ylim = _pair_limits([paths, figs["samples"][pair]["target"]], clip=0.0, margin=0.02)
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
                grid.title(i, j, method_label(exp, m), 9)
        grid.row_label((i, i), labels["pairs"][pair], "left", 7.5)
    return _save(grid.fig, path, tight=False)


def sampling_floor(exp: dict) -> dict[str, float]:
    """Mean W2 between two independent held-out target sets, per pair: no sampler can score below it."""
    floors: dict[str, list[float]] = {}
    for ref in exp.get("reference", []):
        floors.setdefault(ref["pair"], []).append(ref["w2_floor"])
    return {pair: sum(v) / len(v) for pair, v in floors.items()}


def flow_w2_figure(exp: dict, path: Path) -> Path:
    """W2 to held-out target samples against the number of Euler steps (mean ± std over seeds), the adaptive
    dopri5 result (dotted) and the sampling floor (grey dashed); one panel per pair."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    pairs, labels, floor = exp["settings"]["pairs"], exp["labels"], sampling_floor(exp)
    fig, axes = _subplots(1, len(pairs), figsize=(WIDTH_IN, 2.4))
    for i, pair in enumerate(pairs):
        ax = axes[0][i]
        ks: list[int] = []
        for m in [m for m in flow_methods(exp) if m in exp["w2_vs_steps"][pair]]:
            curve = exp["w2_vs_steps"][pair][m]
            ks = curve["steps"]
            # Lipman's σ_min path is almost I-CFM's: dashed with hollow markers, so neither hides the other.
            hollow = {"linestyle": "--", "markerfacecolor": "white"} if m == "lipman" else {}
            ax.errorbar(ks, curve["w2_mean"], yerr=curve["w2_std"], color=_method_color(m), marker="o",
                        markersize=3, capsize=2, label=method_label(exp, m), **hollow)
            if curve.get("dopri5"):
                ax.axhline(curve["dopri5"]["w2"], color=_method_color(m), linestyle=":", linewidth=1)
        if pair in floor:
            ax.axhline(floor[pair], color="#888888", linestyle="--", linewidth=0.8, label="sampling floor")
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
        ax.set_title(labels["pairs"][pair])
        ax.legend(frameon=False, fontsize=7)
    fig.subplots_adjust(left=0.1, right=0.99, bottom=0.18, top=0.9, wspace=0.22)  # by hand: no tight_layout pass
    return _save(fig, path)


# ------------------------------------------------------------------------------------------------------------
# Drawing with a cache: a figure is redrawn only when its data, this module or matplotlib changed
# ------------------------------------------------------------------------------------------------------------

CACHE_FILE = ".figures-cache.json"


@dataclass(frozen=True)
class FigureSpec:
    """One figure: the file it becomes under figures/, the function that draws it, and that function's data
    (everything the drawing depends on besides this module's code and the matplotlib version)."""

    file: str
    draw: Callable[..., Path]
    args: tuple


def _code_fingerprint() -> str:
    from importlib import metadata

    try:
        mpl = metadata.version("matplotlib")
    except metadata.PackageNotFoundError:  # pragma: no cover - matplotlib is a dependency
        mpl = "?"
    from . import figures_extra

    sources = Path(__file__).read_bytes() + Path(figures_extra.__file__).read_bytes()
    return hashlib.sha256(sources + mpl.encode()).hexdigest()


def figure_key(spec: FigureSpec, fingerprint: str) -> str:
    data = json.dumps([spec.file, spec.draw.__name__, spec.args], sort_keys=True, default=str)
    return hashlib.sha256((fingerprint + data).encode()).hexdigest()


def _read_cache(out: Path) -> dict[str, str]:
    try:
        return json.loads((out / CACHE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def stale(specs: list[FigureSpec], out: Path) -> list[FigureSpec]:
    """The figures whose file is missing or whose cached key differs."""
    cache, fingerprint = _read_cache(out), _code_fingerprint()
    return [s for s in specs if not (cache.get(s.file) == figure_key(s, fingerprint) and (out / s.file).is_file())]


def _write_cache(out: Path, keys: dict[str, str]) -> None:
    """Record `keys` ({file: key}) in the cache file, keeping the other figures' entries."""
    cache = _read_cache(out)
    cache.update(keys)
    tmp = (out / CACHE_FILE).with_suffix(".tmp")
    tmp.write_text(json.dumps(cache, indent=1, sort_keys=True), encoding="utf-8")
    tmp.replace(out / CACHE_FILE)


def draw_all(specs: list[FigureSpec], out: Path) -> dict[str, bool]:
    """Draw (in this process) every figure whose cached key differs or whose file is missing; {file: redrawn}."""
    out.mkdir(parents=True, exist_ok=True)
    todo, fingerprint = stale(specs, out), _code_fingerprint()
    for spec in todo:
        spec.draw(*spec.args, out / spec.file)
    _write_cache(out, {s.file: figure_key(s, fingerprint) for s in todo})
    return {s.file: s in todo for s in specs}


def figure_specs(r: dict[str, Any], window: int) -> dict[str, FigureSpec]:
    """Every matplotlib figure of the report, from the loaded results: template name → spec (file under
    figures/, drawing function, data)."""
    from ..contract.facts import QTYPES

    base_q = r["eval"]["base"]["metrics"].get("per_qtype", {})
    tuned_q = r["eval"]["finetuned"]["metrics"].get("per_qtype", {})
    qtypes = list(dict.fromkeys([t for t in QTYPES if t in base_q or t in tuned_q]
                                + sorted(set(base_q) | set(tuned_q))))
    exp = r["flow"]["experiment"]
    flow = {k: exp[k] for k in ("settings", "labels", "summary", "w2_vs_steps", "reference", "figures") if k in exp}
    from .figures_extra import extra_specs

    return {
        **extra_specs(r),
        "loss": FigureSpec("loss.svg", loss_figure, (r["finetune"]["loss"], window)),
        "per_qtype": FigureSpec("per_qtype.svg", per_qtype_figure, (qtypes, base_q, tuned_q)),
        "flow_samples": FigureSpec("flow_samples.png", flow_samples_figure, (flow,)),
        "flow_traj": FigureSpec("flow_trajectories.png", flow_trajectories_figure, (flow,)),
        "flow_w2": FigureSpec("flow_w2.svg", flow_w2_figure, (flow,)),
    }


class Drawing:
    """The figures drawn by a child Python process started first thing, so Python's start-up, matplotlib's
    import and the drawing overlap with the caller reading, rendering and linting the templates on the second
    core. The child reads results/ itself (nothing large crosses the pipe), decides which figures are stale,
    draws them and prints {files, redrawn, keys}; `wait()` records the redrawn ones in the cache and returns
    {file: redrawn}, or raises if the child failed. (Two children were measured to gain nothing on two cores:
    each pays matplotlib's import.)"""

    def __init__(self, results: Path, out: Path, smooth_window: int) -> None:
        import os
        import subprocess
        import sys

        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        code_dir = str(Path(__file__).resolve().parents[2])
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join([code_dir, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        self._proc: subprocess.Popen | None = subprocess.Popen(
            [sys.executable, "-c", "from tamrin.report.figures import child_main; child_main()",
             str(results), str(out), str(smooth_window)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait(self) -> dict[str, bool]:
        if self._proc is None:
            raise RuntimeError("the figures were already collected")
        proc, self._proc = self._proc, None
        out, err = proc.communicate()
        if proc.returncode != 0:
            last = err.strip().splitlines()[-1] if err.strip() else f"exit code {proc.returncode}"
            raise RuntimeError(f"drawing the figures failed: {last}\n{err[-3000:]}")
        done = json.loads(out.strip().splitlines()[-1])
        if done["keys"]:
            _write_cache(self.out, done["keys"])
        return {f: f in done["keys"] for f in done["files"]}

    def close(self) -> None:
        """Stop a running drawing (the caller is already failing for another reason)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.communicate()
            self._proc = None


def child_main() -> None:
    """Child-process entry of `Drawing`: argv = results dir, figures dir, configured smoothing window."""
    import sys

    from .context import load_results

    results, out, configured = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    r = load_results(results)
    specs = list(figure_specs(r, smoothing_window(len(r["finetune"]["loss"]), configured)).values())
    todo, fingerprint = stale(specs, out), _code_fingerprint()
    for spec in todo:
        spec.draw(*spec.args, out / spec.file)
    print(json.dumps({"files": [s.file for s in specs],
                      "keys": {s.file: figure_key(s, fingerprint) for s in todo}}))
