"""``robolearn eval``: held-out rollouts of a checkpoint, saved as JSON with a report folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def run_dir_of(checkpoint: str | Path) -> Path:
    """The run directory of a checkpoint path (``<run>/checkpoints/<name>`` -> ``<run>``; a run
    directory is its own)."""
    ckpt = Path(checkpoint)
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt


def evaluate(checkpoint: str | Path, episodes: int = 50, out: str | Path | None = None,
             seed_start: int | None = None, n_envs: int | None = None, use_ema: bool = True,
             num_inference_steps: int | None = None, n_action_steps: int | None = None,
             videos: int = 4, backend: str = "eager") -> tuple[dict[str, Any], Path, Path]:
    """Evaluate ``checkpoint`` on ``episodes`` held-out seeds (never a demo seed) in parallel env
    processes, write the result JSON and a report folder (``report.md``, plots, MP4 videos of the
    first ``videos`` episodes).

    Args:
        checkpoint: checkpoint or run directory.
        out: JSON path (default ``<run>/eval_<episodes>.json``); the report folder is the same
            path without ``.json``.
        seed_start, n_envs: first seed and env processes (default: the checkpoint config's).
        use_ema: the EMA weights (else the raw ones).
        num_inference_steps, n_action_steps: override the policy's denoising steps and executed
            actions per chunk.
        backend: inference backend (:data:`robolearn.policies.fast.BACKENDS`; eager where missing).

    Returns:
        ``(result, JSON path, report.md path)``; ``result`` as
        :func:`robolearn.eval.rollout.evaluate_checkpoint`.

    Raises:
        CheckpointError: unreadable checkpoint.
        ValueError: an invalid override (e.g. more action steps than the chunk holds), an unknown
            backend or one the policy cannot take.
    """
    from robolearn.eval.report import write_eval_report
    from robolearn.eval.rollout import evaluate_checkpoint

    out = Path(out) if out else run_dir_of(checkpoint) / f"eval_{episodes}.json"
    report_dir = out.with_suffix("")
    result = evaluate_checkpoint(Path(checkpoint), episodes, seed_start=seed_start, n_envs=n_envs, use_ema=use_ema,
                                 num_inference_steps=num_inference_steps, n_videos=videos,
                                 video_dir=report_dir / "videos", n_action_steps=n_action_steps, backend=backend)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return result, out, write_eval_report(report_dir, result)
