"""``robolearn quickstart``: the main job on the embedded defaults: scripted demonstrations of the
default task, training, held-out evaluation and a report; each step resumable (a second call
reuses the demos and the finished run)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence


def quickstart(out: str | Path = "runs/quickstart", overrides: Sequence[str] = (),
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Collect -> train -> evaluate -> report, into ``out``.

    Args:
        out: output folder: ``demos.zarr``, ``train/`` (the run), ``eval.json``, ``report/``.
        overrides: config overrides (``run_dir`` and ``data.path`` default to folders of ``out``).
        log: where the stage lines go.

    Returns:
        ``{"eval": evaluation result, "report": report folder, "timings": {...}, "collect": {...}}``.

    Raises:
        ConfigError, StoreError, CheckpointError: bad overrides or unreadable files.
    """
    from robolearn.apps.collect import collect_demos
    from robolearn.data.store import EpisodeStore
    from robolearn.eval.report import write_report
    from robolearn.eval.rollout import evaluate_checkpoint
    from robolearn.train.trainer import train
    from robolearn.utils.config import load_config
    from robolearn.utils.errors import StoreError

    out = Path(out)
    given = {o.split("=", 1)[0].lstrip("+") for o in overrides}
    defaults = []
    if "run_dir" not in given:
        defaults.append(f"run_dir={out / 'train'}")
    if "data.path" not in given:
        defaults.append(f"data.path={out / 'demos.zarr'}")
    cfg = load_config([*defaults, *overrides])
    out.mkdir(parents=True, exist_ok=True)
    timings = {}
    t_all = time.monotonic()

    log(f"[1/4] collecting {cfg.collect.episodes} scripted demonstrations of '{cfg.task.name}'")
    t = time.monotonic()
    marker = out / "collect.json"
    collected = None
    if marker.is_file():
        try:
            store = EpisodeStore.open(cfg.data.path)
            collected = json.loads(marker.read_text())
            log(f"      reusing {cfg.data.path} ({store.n_episodes} episodes)")
        except StoreError:
            collected = None
    if collected is None:
        collected = collect_demos(cfg.task, cfg.data.path, int(cfg.collect.episodes),
                                  seed_start=int(cfg.collect.seed_start), overwrite=True)
        marker.write_text(json.dumps(collected))
        log(f"      kept {collected['kept']}, dropped {collected['dropped']} failed episodes")
    timings["collect_s"] = round(time.monotonic() - t, 1)

    log(f"[2/4] training '{cfg.policy.name}' for {cfg.train.steps} steps -> {cfg.run_dir}")
    t = time.monotonic()
    ckpt = train(cfg)
    timings["train_s"] = round(time.monotonic() - t, 1)

    log(f"[3/4] evaluating on {cfg.eval.episodes} held-out seeds")
    t = time.monotonic()
    result = evaluate_checkpoint(ckpt, int(cfg.eval.episodes), n_videos=int(cfg.eval.videos),
                                 video_dir=out / "report" / "videos")
    (out / "eval.json").write_text(json.dumps(result, indent=2))
    timings["eval_s"] = round(time.monotonic() - t, 1)

    log("[4/4] writing report")
    timings["total_s"] = round(time.monotonic() - t_all, 1)
    report = write_report(out / "report", cfg.run_dir, result,
                          extra={"collect": {k: collected[k] for k in ("kept", "dropped", "steps")},
                                 "timings": timings})
    return {"eval": result, "report": report, "timings": timings, "collect": collected}
