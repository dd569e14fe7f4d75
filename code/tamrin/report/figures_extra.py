"""Figures added for issue 16, kept apart from figures.py (same style, same cache): the LoRA rank ablation.

`extra_specs(r)` lists them for figures.figure_specs; a figure whose results are absent (the ablation is off in
this profile) is simply not listed, and the templates say so in words instead.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .figures import COLORS, WIDTH_IN, FigureSpec, _save, _subplots, moving_average

RANK_COLOR = "#1f5fa8"
UNQUANTIZED_COLOR = "#d9731a"


def ablation_runs(ablation: dict[str, Any]) -> list[dict[str, Any]]:
    """What the rank figure draws of each run: rank, base, quality with its interval, trainable parameters and
    the loss curve."""
    return [{"rank": x["rank"], "quantization": x["quantization"], "em": x["exact_match"], "em_ci": x["exact_match_ci"],
             "rougeL": x["rougeL"]["f"], "trainable": x["trainable_params"], "loss": x["loss"]}
            for x in ablation["runs"]]


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
    quality.errorbar(ranks, em, yerr=err, color=RANK_COLOR, marker="o", markersize=3.5, capsize=2,
                     label="exact match (95% CI)")
    quality.plot(ranks, [100 * x["rougeL"] for x in main], color=COLORS["base"], marker="s", markersize=3,
                 linestyle="--", label="ROUGE-L F1")
    for x in other:
        quality.errorbar([x["rank"]], [100 * x["em"]], yerr=[[100 * (x["em"] - x["em_ci"][0])],
                                                             [100 * (x["em_ci"][1] - x["em"])]],
                         color=UNQUANTIZED_COLOR, marker="D", markersize=4, capsize=2,
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
    params.plot(ranks, [x["trainable"] for x in main], color=RANK_COLOR, marker="o", markersize=3.5)
    params.set_yscale("log", base=2)
    params.set_ylabel("trainable parameters")
    for ax in (quality, params):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ranks, [str(r) for r in ranks])
        ax.minorticks_off()
        ax.set_xlabel("LoRA rank r")
    fig.subplots_adjust(left=0.08, right=0.99, bottom=0.2, top=0.97, wspace=0.45)
    return _save(fig, path, tight=False)


def extra_specs(r: dict[str, Any]) -> dict[str, FigureSpec]:
    """Template name → spec of the figures this module draws (only those whose results exist)."""
    ab = r["ablation"]
    if not ab["enabled"] or not ab["runs"]:
        return {}
    return {"ablation": FigureSpec("ablation_rank.svg", ablation_figure,
                                   (ablation_runs(ab), ab["settings"]["quantization"]))}
