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


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"Date": None, "Creator": None} if path.suffix == ".svg" else {"Software": None}
    fig.savefig(path, metadata=meta, dpi=200 if path.suffix == ".png" else None)
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


def _xy(points: list) -> tuple[list[float], list[float]]:
    return [p[0] for p in points], [p[1] for p in points]


def _clean(ax: Any) -> None:
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(False)
    for side in ("top", "right", "left", "bottom"):
        ax.spines[side].set_visible(True)
        ax.spines[side].set_color("#cccccc")


def flow_samples_figure(exp: dict, path: Path) -> Path:
    """Rows: source → target pairs; columns: source and target samples, then each method's samples after one
    Euler step and after the adaptive dopri5 solve (experiment.json `figures.samples`)."""
    pairs, methods = exp["settings"]["pairs"], exp["settings"]["methods"]
    labels = exp["labels"]
    samples = exp["figures"]["samples"]
    panels = [("source", "source $p_0$"), ("target", "target $q$")]
    panels += [(f"{m}/{solver}", f"{_short(labels['methods'][m])}, {name}")
               for m in methods for solver, name in (("euler_1", "1 Euler step"), ("dopri5", "dopri5"))]
    fig, axes = _subplots(len(pairs), len(panels), figsize=(WIDTH_IN, 1.2 * len(pairs) + 0.35))
    for i, pair in enumerate(pairs):
        for j, (key, title) in enumerate(panels):
            ax = axes[i][j]
            if "/" in key:
                m, solver = key.split("/")
                pts, color = samples[pair]["generated"][m][solver], _method_color(m)
            else:
                pts, color = samples[pair][key], COLORS[key]
            ax.scatter(*_xy(pts), s=1.2, color=color, alpha=0.6, linewidths=0, rasterized=True)
            _clean(ax)
            if i == 0:
                ax.set_title(title, fontsize=7)
            if j == 0:
                ax.set_ylabel(labels["pairs"][pair], fontsize=7)
    fig.tight_layout(pad=0.3, w_pad=0.2, h_pad=0.4)
    return _save(fig, path)


def flow_trajectories_figure(exp: dict, path: Path) -> Path:
    """Trajectories x_t of the learned ODE (dopri5 states) from source (grey) to end point (black), over faint
    target samples; rows: pairs, columns: methods."""
    from matplotlib.collections import LineCollection

    pairs, methods = exp["settings"]["pairs"], exp["settings"]["methods"]
    labels, figs = exp["labels"], exp["figures"]
    fig, axes = _subplots(len(pairs), len(methods), figsize=(WIDTH_IN * 0.75, 2.0 * len(pairs) + 0.2))
    for i, pair in enumerate(pairs):
        for j, m in enumerate(methods):
            ax = axes[i][j]
            xy = figs["trajectories"][pair][m]["xy"]
            ax.scatter(*_xy(figs["samples"][pair]["target"]), s=1, color="#dddddd", linewidths=0, rasterized=True)
            ax.add_collection(LineCollection(xy, colors=_method_color(m), linewidths=0.45, alpha=0.6))
            ax.scatter(*_xy([t[0] for t in xy]), s=2.5, color=COLORS["source"], zorder=3, linewidths=0)
            ax.scatter(*_xy([t[-1] for t in xy]), s=2.5, color=COLORS["target"], zorder=3, linewidths=0)
            ax.autoscale_view()
            _clean(ax)
            if i == 0:
                ax.set_title(_short(labels["methods"][m]))
            if j == 0:
                ax.set_ylabel(labels["pairs"][pair], fontsize=7.5)
    fig.tight_layout(pad=0.3)
    return _save(fig, path)


def sampling_floor(exp: dict) -> dict[str, float]:
    """Mean W2 between two independent held-out target sets, per pair: no sampler can score below it."""
    floors: dict[str, list[float]] = {}
    for ref in exp.get("reference", []):
        floors.setdefault(ref["pair"], []).append(ref["w2_floor"])
    return {pair: sum(v) / len(v) for pair, v in floors.items()}


def flow_w2_figure(exp: dict, path: Path) -> Path:
    """W2 to held-out target samples against the number of Euler steps (mean ± std over seeds), the adaptive
    dopri5 result (dotted) and the sampling floor (grey dashed); one panel per pair."""
    from matplotlib.ticker import FuncFormatter, NullFormatter, NullLocator

    pairs, methods = exp["settings"]["pairs"], exp["settings"]["methods"]
    labels, floor = exp["labels"], sampling_floor(exp)
    fig, axes = _subplots(1, len(pairs), figsize=(WIDTH_IN, 2.4))
    for i, pair in enumerate(pairs):
        ax = axes[0][i]
        ks: list[int] = []
        for m in methods:
            curve = exp["w2_vs_steps"][pair][m]
            ks = curve["steps"]
            ax.errorbar(ks, curve["w2_mean"], yerr=curve["w2_std"], color=_method_color(m), marker="o",
                        markersize=3, capsize=2, label=_short(labels["methods"][m]))
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
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
        ax.set_xlabel("Euler steps")
        if i == 0:
            ax.set_ylabel("$W_2$ to held-out target")
        ax.set_title(labels["pairs"][pair])
        ax.legend(frameon=False, fontsize=7)
    fig.tight_layout(pad=0.3)
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
    return hashlib.sha256(Path(__file__).read_bytes() + mpl.encode()).hexdigest()


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


def _write_cache(out: Path, specs: list[FigureSpec]) -> None:
    cache, fingerprint = _read_cache(out), _code_fingerprint()
    cache.update({s.file: figure_key(s, fingerprint) for s in specs})
    tmp = (out / CACHE_FILE).with_suffix(".tmp")
    tmp.write_text(json.dumps(cache, indent=1, sort_keys=True), encoding="utf-8")
    tmp.replace(out / CACHE_FILE)


def draw_all(specs: list[FigureSpec], out: Path) -> dict[str, bool]:
    """Draw (in this process) every figure whose cached key differs or whose file is missing; {file: redrawn}."""
    out.mkdir(parents=True, exist_ok=True)
    todo = stale(specs, out)
    for spec in todo:
        spec.draw(*spec.args, out / spec.file)
    _write_cache(out, todo)
    return {s.file: s in todo for s in specs}


class Drawing:
    """Stale figures drawn by a child Python process while the caller renders and lints the templates, so
    matplotlib's import and drawing overlap with that work on a second core. (Two children were measured to
    gain nothing on two cores: each pays matplotlib's import.) The child gets the figures as a JSON job
    (function names and data), so nothing of the caller's `__main__` is re-run. `wait()` records the drawn
    figures in the cache and returns {file: redrawn}; it raises if the child failed."""

    def __init__(self, specs: list[FigureSpec], out: Path) -> None:
        import os
        import subprocess
        import sys
        import tempfile

        self.specs, self.out = specs, out
        self._todo = stale(specs, out)
        self._procs: list[tuple[subprocess.Popen, str]] = []
        code_dir = str(Path(__file__).resolve().parents[2])
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join([code_dir, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        for part in [self._todo] if self._todo else []:
            fd, job = tempfile.mkstemp(prefix=".figures-job-", suffix=".json", dir=out)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"out": str(out), "figures": [{"file": s.file, "draw": s.draw.__name__, "args": s.args}
                                                        for s in part]}, f)
            proc = subprocess.Popen([sys.executable, "-c", f"from tamrin.report.figures import run_job; run_job({job!r})"],
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self._procs.append((proc, job))

    def wait(self) -> dict[str, bool]:
        errors = []
        for proc, job in self._procs:
            try:
                _, err = proc.communicate()
            finally:
                Path(job).unlink(missing_ok=True)
            if proc.returncode != 0:
                last = err.strip().splitlines()[-1] if err.strip() else f"exit code {proc.returncode}"
                errors.append(f"{last}\n{err[-3000:]}")
        if self._procs and not errors:
            _write_cache(self.out, self._todo)
        self._procs = []
        if errors:
            raise RuntimeError("drawing the figures failed: " + "\n".join(errors))
        return {s.file: s in self._todo for s in self.specs}

    def close(self) -> None:
        """Let a running drawing finish quietly (the caller is already failing for another reason)."""
        try:
            self.wait()
        except Exception:  # noqa: BLE001 - the caller's error is the one to report
            pass


def run_job(path: str) -> None:
    """Child-process entry: draw the figures of a JSON job written by `Drawing` (the parent updates the cache)."""
    job = json.loads(Path(path).read_text(encoding="utf-8"))
    out = Path(job["out"])
    for f in job["figures"]:
        globals()[f["draw"]](*f["args"], out / f["file"])
