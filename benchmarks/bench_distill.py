"""Few-step inference benchmark: a diffusion teacher vs its distilled students, success and latency.

    .venv/bin/python benchmarks/bench_distill.py ENTRY --teacher RUN [--student NAME=RUN ...]
        [--steps 1 2 3] [--episodes 50] [--n-action-steps K ...] [--out benchmarks/results/distill.json]

``ENTRY`` names the record (e.g. ``lift``). The teacher (a ``robolearn train`` run of a diffusion
policy, evaluated at its own DDIM steps) and every student (a ``robolearn distill`` run, evaluated at
each of ``--steps`` consistency evaluations) run with each of ``--n-action-steps`` actions executed
per chunk (a one-evaluation policy can afford to replan more often; a student's points are against
the teacher at the same number) on the **same** held-out seeds (the teacher's
config, hence the same demonstration seeds excluded), with their EMA weights, in parallel env
processes as ``robolearn eval`` does. Each evaluated setting also gets its ``predict_action``
latency at batch 1, one thread, on ONNX Runtime and in eager torch (``bench_inference.measure``:
p50/p95 over ``--repeats`` calls after 5 warm-up calls, and the ONNX model's max abs difference from
eager). Issue 14's bar on a setting: p50 <= 5 ms on one thread and success within 5 points of the
teacher. A student's record also holds its ``distill_summary.json`` (method, steps, wall time,
validation gap). The JSON keeps one record per entry (others are kept from the previous file);
``benchmarks/readme_tables.py`` writes the README's table from it. Minutes per entry on a 2-core
CPU: a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inference import measure  # noqa: E402
from bench_policies import machine_info, save_entry  # noqa: E402


def evaluate(checkpoint: str, steps: int | None, episodes: int, n_action_steps: int | None, repeats: int,
             timed: dict) -> dict:
    """Success on the held-out seeds and batch-1 latency (1 thread; eager and ONNX Runtime) at ``steps``.

    ``timed``: ``(checkpoint, steps) -> (latency record, num_inference_steps, n_action_steps)`` of the
    pairs timed so far in this run, filled here: latency does not depend on the actions executed per
    chunk, so each ``(checkpoint, steps)`` is timed once.
    """
    import torch

    from robolearn.eval.rollout import evaluate_checkpoint, set_inference_steps
    from robolearn.train.checkpoint import load_policy

    r = evaluate_checkpoint(checkpoint, episodes, num_inference_steps=steps, n_action_steps=n_action_steps,
                            progress=True)
    if (checkpoint, steps) not in timed:
        policy, _ = load_policy(checkpoint)
        if steps is not None:
            set_inference_steps(policy, steps)
        threads = torch.get_num_threads()
        latency = {b: measure(policy, b, 1, repeats) for b in ("eager", "onnxruntime")}
        torch.set_num_threads(threads)  # measure() leaves one thread; the next evaluation runs as this one did
        timed[checkpoint, steps] = (latency, getattr(policy, "num_inference_steps", None), policy.n_action_steps)
    latency, k, default_actions = timed[checkpoint, steps]
    return {"num_inference_steps": k,
            "n_action_steps": n_action_steps or default_actions,
            "success_rate": r["success_rate"], "n_success": r["n_success"], "n_episodes": r["n_episodes"],
            "success_ci95": r["success_ci95"], "mean_episode_length": r["mean_episode_length"],
            "eval_wall_s": r["wall_s"], "seeds": r["seeds"], "latency_1_thread": latency}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("entry", help="name of the record (e.g. lift)")
    p.add_argument("--teacher", required=True, help="the teacher's run directory or checkpoint")
    p.add_argument("--student", action="append", default=[], metavar="NAME=RUN",
                   help="a robolearn distill run of this teacher; repeatable")
    p.add_argument("--steps", nargs="*", type=int, default=[1, 2, 3], help="student evaluations per chunk to measure")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--n-action-steps", type=int, nargs="*", default=[None],
                   help="actions executed per chunk, each evaluated for the teacher and every student (a student "
                        "is compared with the teacher at the same number); 0 is the policy's own (default: 0 only)")
    p.add_argument("--repeats", type=int, default=200, help="timed predict_action calls per latency figure")
    p.add_argument("--note", default="", help="conditions of this run (e.g. other jobs sharing the CPU)")
    p.add_argument("--out", default="benchmarks/results/distill.json")
    args = p.parse_args()
    students = dict(s.split("=", 1) for s in args.student)
    for path in [args.teacher, *students.values()]:
        if not Path(path).exists():
            p.error(f"no run or checkpoint at {path}")
    t0 = time.monotonic()
    print(f"== {args.entry}: teacher {args.teacher}", flush=True)
    nas = [None if a in (None, 0) else a for a in args.n_action_steps]
    timed: dict = {}  # (checkpoint, steps) -> latency, timed once per run (see evaluate)
    teachers = {}  # actions per chunk -> the teacher's record: students compare with the teacher at theirs
    for a in nas:
        teachers[a] = {"run": args.teacher, **evaluate(args.teacher, None, args.episodes, a, args.repeats, timed)}
        print(f"   teacher, {teachers[a]['n_action_steps']} actions per chunk: {teachers[a]['success_rate']:.2f} "
              f"{teachers[a]['success_ci95']}", flush=True)
    entry = {"teacher": teachers[nas[0]], "students": {},
             "teacher_by_actions": {str(t["n_action_steps"]): t for t in teachers.values()}}
    for name, run in students.items():
        summary_file = Path(run) / "distill_summary.json"
        summary = json.loads(summary_file.read_text()) if summary_file.is_file() else None
        cfg_file = Path(run) / "config.yaml"
        settings = None
        if cfg_file.is_file():
            from omegaconf import OmegaConf

            settings = OmegaConf.to_container(OmegaConf.load(cfg_file).distill, resolve=True)
        rec = {"run": run, "distill": settings, "summary": summary, "evals": {}}
        for a in nas:
            for k in args.steps:
                if settings and settings.get("method") == "direct" and k != 1:
                    continue  # a direct student is distilled for one evaluation only
                r = evaluate(run, k, args.episodes, a, args.repeats, timed)
                r["points_vs_teacher"] = round(100 * (r["success_rate"] - teachers[a]["success_rate"]), 1)
                rec["evals"][str(k) if a is None else f"{k}@{a}"] = r
                ort = r["latency_1_thread"]["onnxruntime"]
                print(f"   {name} at {k} step(s), {a or 'default'} actions per chunk: {r['success_rate']:.2f} "
                      f"{r['success_ci95']} ({r['points_vs_teacher']:+.0f} points), ORT p50 "
                      f"{ort.get('p50_ms', float('nan')):.2f} ms", flush=True)
        entry["students"][name] = rec
    if entry["teacher"]["seeds"] != next((e["seeds"] for s in entry["students"].values() for e in s["evals"].values()),
                                         entry["teacher"]["seeds"]):
        sys.exit("teacher and students were evaluated on different seeds (another data.path?): not recorded")
    entry.update({"episodes": args.episodes, "note": args.note,
                  "wall_s": round(time.monotonic() - t0, 1), "machine": machine_info()})
    save_entry(Path(args.out), "distill", args.entry, entry)


if __name__ == "__main__":
    main()
