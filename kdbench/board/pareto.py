"""Pareto fronts: which models no other model beats on both quality and cost (latency, size).

matplotlib with the Agg backend: files only, no display, safe in cron and CI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def pareto_mask(cost: Sequence[float], quality: Sequence[float], higher_is_better: bool) -> np.ndarray:
    """True for points no other point dominates (cost lower-or-equal and quality better-or-equal,
    one of them strictly)."""
    c = np.asarray(cost, float)
    q = np.asarray(quality, float) if higher_is_better else -np.asarray(quality, float)
    ok = np.isfinite(c) & np.isfinite(q)
    mask = np.zeros(len(c), bool)
    for i in np.flatnonzero(ok):
        dominated = ok & (c <= c[i]) & (q >= q[i]) & ((c < c[i]) | (q > q[i]))
        mask[i] = not dominated.any()
    return mask


def plot_front(labels: Sequence[str], roles: Sequence[str], cost: Sequence[float], quality: Sequence[float], *,
               higher_is_better: bool, cost_label: str, quality_label: str, title: str, path: Path,
               log_x: bool = False) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c, q = np.asarray(cost, float), np.asarray(quality, float)
    front = pareto_mask(c, q, higher_is_better)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for role, marker in (("teacher", "s"), ("student", "o"), ("reference", "^")):
        sel = np.array([r == role for r in roles], dtype=bool)
        if not sel.any():
            continue
        ax.scatter(c[sel & ~front], q[sel & ~front], marker=marker, color="tab:gray", alpha=0.6,
                   label=f"{role}")
        ax.scatter(c[sel & front], q[sel & front], marker=marker, color="tab:red", label=f"{role} (Pareto)")
    order = np.argsort(c[front])
    ax.plot(c[front][order], q[front][order], color="tab:red", linewidth=1, drawstyle="steps-post"
            if not higher_is_better else "steps-pre")
    for x, y, label in zip(c, q, labels):
        if np.isfinite(x) and np.isfinite(y):
            ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(cost_label + " (lower is better)")
    ax.set_ylabel(quality_label + (" (higher is better)" if higher_is_better else " (lower is better)"))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def front_images(board, out_dir: Path) -> dict[str, list[Path]]:
    """Per target, the primary metric against every headline cost the metrics declare (on the
    axis scale they declare): a new cost in a new unit is plotted without naming it here."""
    if board.empty or not board.primary:
        return {}
    meta = board.columns[board.primary]
    images: dict[str, list[Path]] = {}
    for target in board.target_order:
        group = board.frame[(board.frame["target"] == target) & (board.frame["flag"] == "")]
        if group.empty:
            continue
        labels = [m if role != "student" else f"{m}·{loss}" for m, role, loss in
                  zip(group["model"], group["role"], group["loss"])]
        # the same model under two provenances (another commit, budget, host) is two points
        labels = [f"{label} [{prov}]" if labels.count(label) > 1 else label
                  for label, prov in zip(labels, group["provenance"])]
        for cost in board.costs():
            cost_meta = board.columns[cost]
            label = f"{cost} ({cost_meta.unit})" if cost_meta.unit else cost
            slug = f"{target}-{cost}".replace("/", "-")
            images.setdefault(target, []).append(plot_front(
                labels, list(group["role"]), group[cost], group[board.primary],
                higher_is_better=meta.higher_is_better, cost_label=label,
                quality_label=f"{board.primary} ({meta.unit})" if meta.unit else board.primary,
                title=f"{target}: {board.primary} vs {cost}", path=Path(out_dir) / f"pareto-{slug}.png",
                log_x=cost_meta.scale == "log"))
    return images
