"""Reports: metrics JSON, loss-curve plot, the config used, and a short Markdown summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping


def read_metrics(path: str | Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """Train and validation loss series ``[(step, loss)]`` from a run's ``metrics.jsonl``."""
    train, val = [], []
    path = Path(path)
    if not path.is_file():
        return train, val
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if "loss" in row:
            train.append((row["step"], row["loss"]))
        if "val_loss" in row:
            val.append((row["step"], row["val_loss"]))
    # A resumed run re-logs steps after its last checkpoint: keep the latest value of each step.
    dedup = lambda xs: sorted(dict(xs).items())  # noqa: E731
    return dedup(train), dedup(val)


def plot_losses(metrics_path: str | Path, out_png: str | Path) -> Path:
    """Plot training loss (raw and smoothed) and validation loss against step, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    train, val = read_metrics(metrics_path)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    if train:
        s, l = np.array(train).T
        ax.plot(s, l, color="tab:blue", alpha=0.3, lw=0.8, label="train loss")
        k = max(1, len(l) // 30)
        if len(l) > k:
            smooth = np.convolve(l, np.ones(k) / k, mode="valid")
            ax.plot(s[k - 1 :], smooth, color="tab:blue", lw=1.8, label=f"train loss (mean of {k})")
    if val:
        s, l = np.array(val).T
        ax.plot(s, l, "o-", color="tab:orange", lw=1.5, label="validation loss (EMA weights)")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title("Training curve")
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def write_report(out_dir: str | Path, run_dir: str | Path, eval_result: Mapping[str, Any],
                 extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``metrics.json``, ``loss_curve.png``, ``eval.png``, ``config.yaml`` and ``report.md`` (with
    links to any videos the evaluation recorded) into ``out_dir``.

    Args:
        out_dir: report folder (created).
        run_dir: the training run (``metrics.jsonl``, ``config.yaml``, ``train_summary.json``).
        eval_result: output of :func:`robolearn.eval.rollout.evaluate_checkpoint`.
        extra: more top-level entries for ``metrics.json`` (e.g. collection and timing figures).

    Returns:
        ``out_dir``.
    """
    out_dir, run_dir = Path(out_dir), Path(run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_summary = {}
    if (run_dir / "train_summary.json").is_file():
        train_summary = json.loads((run_dir / "train_summary.json").read_text())
    metrics = {
        "eval": {k: v for k, v in eval_result.items() if k != "episodes"},
        "train": train_summary,
        **(dict(extra) if extra else {}),
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out_dir / "episodes.json").write_text(json.dumps(eval_result.get("episodes", []), indent=1))
    plot_losses(run_dir / "metrics.jsonl", out_dir / "loss_curve.png")
    plot_eval(eval_result, out_dir / "eval.png")
    if (run_dir / "config.yaml").is_file():
        (out_dir / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    e = metrics["eval"]
    lines = [
        f"# robolearn report: {e.get('task')} / {e.get('policy')}",
        "",
        f"- **Success rate**: {e['success_rate']:.3f} ({e['n_success']}/{e['n_episodes']} held-out seeded episodes, "
        f"95 % Wilson interval [{e['success_ci95'][0]:.3f}, {e['success_ci95'][1]:.3f}])",
        f"- Mean episode length: {e['mean_episode_length']:.1f} steps",
        f"- Evaluation seeds: {e['seeds'][0]} to {e['seeds'][1]}, {e.get('n_envs')} parallel envs, {e['wall_s']:.0f} s",
    ]
    if train_summary:
        lines.append(
            f"- Training: {train_summary.get('steps')} steps on {train_summary.get('n_episodes')} demos, "
            f"{train_summary.get('wall_s', 0):.0f} s, {train_summary.get('samples_per_s')} samples/s, "
            f"{train_summary.get('n_params', 0) / 1e6:.2f} M parameters, final val loss "
            + (f"{train_summary['val_loss']:.4f}" if train_summary.get("val_loss") is not None else "n/a")
        )
    for k, v in (extra or {}).items():
        lines.append(f"- {k}: {json.dumps(v)}")
    lines += ["", "![loss curve](loss_curve.png)", "", "![success and episode lengths](eval.png)", ""]
    lines += _video_lines(eval_result, out_dir)
    lines += ["Config used: [config.yaml](config.yaml)", ""]
    (out_dir / "report.md").write_text("\n".join(lines))
    return out_dir


def plot_eval(eval_result: Mapping[str, Any], out_png: str | Path) -> Path:
    """Two panels: the running success rate over episodes with its 95 % Wilson band, and episode
    lengths of successes and failures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from robolearn.eval.metrics import wilson_interval

    eps = eval_result.get("episodes", [])
    ok = np.array([bool(e["success"]) for e in eps])
    lengths = np.array([e["length"] for e in eps])
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=120)
    if len(ok):
        n = np.arange(1, len(ok) + 1)
        k = np.cumsum(ok)
        band = np.array([wilson_interval(int(ki), int(ni)) for ki, ni in zip(k, n)])
        a.fill_between(n, band[:, 0], band[:, 1], color="tab:green", alpha=0.2, label="95 % Wilson interval")
        a.plot(n, k / n, color="tab:green", lw=1.8, label="success rate")
        bins = np.linspace(0, max(1, lengths.max()), 20)
        b.hist([lengths[ok], lengths[~ok]], bins=bins, stacked=True, color=["tab:green", "tab:red"],
               label=[f"success ({ok.sum()})", f"failure ({(~ok).sum()})"])
    a.set_ylim(0, 1.02)
    a.set_xlabel("episodes evaluated")
    a.set_ylabel("success rate")
    a.grid(True, alpha=0.3)
    a.legend(loc="lower right")
    b.set_xlabel("episode length (steps)")
    b.set_ylabel("episodes")
    b.legend()
    fig.suptitle(f"{eval_result.get('task')} / {eval_result.get('policy')}")
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def write_eval_report(out_dir: str | Path, eval_result: Mapping[str, Any]) -> Path:
    """Write ``eval.json``, ``eval.png`` and ``report.md`` (success table, plots, links to the
    videos) of one evaluation into ``out_dir``.

    Args:
        out_dir: report folder (created); videos recorded by the evaluation may already be in it.
        eval_result: output of :func:`robolearn.eval.rollout.evaluate_checkpoint`.

    Returns:
        The path of ``report.md``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.json").write_text(json.dumps(dict(eval_result), indent=2))
    plot_eval(eval_result, out_dir / "eval.png")
    e = eval_result
    lo, hi = e["success_ci95"]
    lines = [
        f"# Evaluation: {e.get('task')} / {e.get('policy')}",
        "",
        f"Checkpoint `{e.get('checkpoint')}`, seeds {e['seeds'][0]} to {e['seeds'][1]}, {e.get('n_envs')} parallel "
        f"envs, {e['wall_s']:.0f} s.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| success rate | **{e['success_rate']:.3f}** ({e['n_success']}/{e['n_episodes']}) |",
        f"| 95 % Wilson interval | [{lo:.3f}, {hi:.3f}] |",
        f"| mean episode length | {e['mean_episode_length']:.1f} steps |",
    ]
    lines += [f"| mean {k[len('mean_max_'):]} (episode max) | {v:.3f} |" for k, v in e.items() if k.startswith("mean_max_")]
    if e.get("num_inference_steps") is not None:
        lines.append(f"| denoising steps | {e['num_inference_steps']} |")
    if e.get("n_action_steps") is not None:
        lines.append(f"| actions executed per chunk | {e['n_action_steps']} |")
    lines += ["", "![success and episode lengths](eval.png)", ""]
    lines += _video_lines(e, out_dir)
    report = out_dir / "report.md"
    report.write_text("\n".join(lines))
    return report


def _video_lines(eval_result: Mapping[str, Any], out_dir: Path) -> list[str]:
    """Markdown table of the recorded episodes, with links relative to ``out_dir``."""
    rows = [(i, ep) for i, ep in enumerate(eval_result.get("episodes", [])) if ep.get("video")]
    if not rows:
        return []
    lines = ["## Videos", "", "| episode | seed | outcome | length | video |", "|---|---|---|---|---|"]
    for i, ep in rows:
        video = Path(ep["video"])
        rel = video.relative_to(out_dir) if video.is_relative_to(out_dir) else video
        lines.append(f"| {i} | {ep['seed']} | {'success' if ep['success'] else 'failure'} | {ep['length']} "
                     f"| [{video.name}]({rel}) |")
    return lines + [""]
