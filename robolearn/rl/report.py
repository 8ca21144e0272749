"""The learning-curve figure of a residual-RL run."""

from __future__ import annotations

import json
from pathlib import Path


def plot_learning_curve(metrics_path: str | Path, out_png: str | Path) -> Path | None:
    """Success rate against env steps and against wall time (training episodes, and the periodic
    validation with its 95 % interval, starred where the run's ``checkpoints/best`` was taken),
    from ``metrics.jsonl`` (and ``checkpoints/best/best.json`` beside it); ``None`` when there are no rows yet."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from robolearn.rl.trainer import read_best

    rows = [json.loads(l) for l in Path(metrics_path).read_text().splitlines() if l.strip()]
    if not rows:
        return None
    best = read_best(Path(metrics_path).parent)  # the run's best checkpoint, if it keeps one
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, x_key, label in ((axes[0], "env_steps", "env steps"), (axes[1], "wall_s", "wall time (min)")):
        scale = 1 / 60 if x_key == "wall_s" else 1
        tr = [(r[x_key] * scale, r["train_success_rate"]) for r in rows if r.get("train_success_rate") is not None]
        if tr:
            ax.plot(*zip(*tr), color="0.6", lw=1, label="training episodes (stochastic)")
        val = [(r[x_key] * scale, r["val_success_rate"], *r["val_ci95"]) for r in rows if "val_success_rate" in r]
        if val:
            x, y, lo, hi = zip(*val)
            ax.plot(x, y, "o-", color="C0", label="validation (deterministic)")
            ax.fill_between(x, lo, hi, color="C0", alpha=0.2)
            if best is not None:
                ax.plot(best[x_key] * scale, best["val_success_rate"], "*", color="C3", ms=12,
                        label="best validation (checkpoints/best)")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("success rate")
    axes[0].set_ylim(-0.02, 1.02)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle("residual RL")
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
