"""Inference latency benchmark: ``predict_action`` p50/p95 at batch 1, 1 and 2 threads, per policy and backend.

    .venv/bin/python benchmarks/bench_inference.py [--only NAME ...] [--backends eager onnxruntime compile]
        [--threads 1 2] [--repeats 50] [--checkpoint NAME=PATH ...] [--note TEXT]
        [--out benchmarks/results/inference.json]

Entries (:data:`ENTRIES`): the state diffusion policy of Lift (``configs/policy/diffusion.yaml`` +
``configs/task/lift.yaml``) at 10 DDIM steps and at 3 and 1 steps (stand-ins for a distilled
policy: a consistency step runs the same network as a DDIM step), the image diffusion policy
(``diffusion_image`` + ``lift_image``: 2 cameras 84x84) at 10, 3 and 1 steps, and ACT
(``act_small``, the ACT config of every ACT entry in ``bench_policies.py``). These are **untrained**,
randomly initialized from the configs (seeded), with synthetic normalizer statistics: latency does not
depend on the weights. ``--checkpoint NAME=PATH`` adds a trained checkpoint (e.g. a distilled
consistency policy from ``robolearn distill``) as entry ``NAME``; a backend that cannot run it is
recorded with its error.

For every entry, backend (:mod:`robolearn.policies.fast`) and thread count: the backend is built
(ONNX export or ``torch.compile`` and the first call, timed as ``setup_s``; compile is redone per thread count, since
inductor fixes its OpenMP threads when it compiles), its actions are compared with eager torch's on a
seeded example with the same noise (``max_abs_diff``, raw action units), then ``predict_action`` runs
``--repeats`` times after 5 warm-up calls on a random observation (monotonic clock). The JSON keeps one
record per entry (others are kept from the previous file) with the machine (``bench_policies.machine_info``)
and ``--note`` (say there whether other jobs shared the CPU).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_policies import machine_info, save_entry  # noqa: E402

LIFT_LOWDIM = {"robot0_eef_pos": (3,), "robot0_eef_quat": (4,), "robot0_gripper_qpos": (2,), "object": (10,)}
LIFT_ACTION_DIM = 7

#: name -> (configs/policy name, configs/task name, DDIM steps or None for the config's)
ENTRIES: dict[str, tuple[str, str, int | None]] = {
    "state_dp_10steps": ("diffusion", "lift", 10),
    "state_dp_3steps": ("diffusion", "lift", 3),
    "state_dp_1step": ("diffusion", "lift", 1),
    "image_dp_10steps": ("diffusion_image", "lift_image", 10),
    "image_dp_3steps": ("diffusion_image", "lift_image", 3),  # stand-ins for a distilled image policy
    "image_dp_1step": ("diffusion_image", "lift_image", 1),
    "act": ("act_small", "lift", None),
}
BACKENDS = ("eager", "onnxruntime", "compile")


def untrained_policy(policy_name: str, task_name: str, steps: int | None):
    """A seeded, randomly initialized policy built from ``configs/policy/<policy_name>.yaml`` and
    ``configs/task/<task_name>.yaml`` (Lift's keys; cameras at the task's ``image_size``) with synthetic
    normalizer statistics; eval mode. Returns ``(policy, description)``."""
    import torch

    from robolearn.data.normalizer import compute_stats
    from robolearn.policies import build_policy
    from robolearn.utils.config import load_config

    cfg = load_config([f"task={task_name}", f"policy={policy_name}"])
    h, w = (int(x) for x in cfg.task.image_size)
    shapes = {k: LIFT_LOWDIM.get(k, (h, w, 3)) for k in cfg.task.obs_keys}
    rng = np.random.default_rng(0)
    stats = compute_stats({**{k: rng.normal(size=(20, *s)) for k, s in shapes.items() if len(s) == 1},
                           "action": rng.uniform(-1, 1, size=(20, LIFT_ACTION_DIM))})
    torch.manual_seed(0)
    policy = build_policy(dict(cfg.policy), shapes, LIFT_ACTION_DIM, stats=stats).eval()
    if steps is not None:
        policy.num_inference_steps = steps
    return policy, (f"untrained (randomly initialized, seed 0) from configs/policy/{policy_name}.yaml + "
                    f"configs/task/{task_name}.yaml, synthetic normalizer statistics")


def percentiles(times_s: list[float]) -> dict:
    """p50/p95/min of a list of seconds, in ms."""
    ms = np.asarray(times_s) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3),
            "min_ms": round(float(ms.min()), 3), "n": len(ms)}


def measure(policy, backend: str, threads: int, repeats: int) -> dict:
    """Build ``backend`` for ``policy`` with ``threads`` threads, check it against eager, time ``predict_action``."""
    import torch

    from robolearn.policies.export import random_obs
    from robolearn.policies.fast import accelerate

    torch.set_num_threads(threads)
    if backend == "compile":
        torch._dynamo.reset()  # inductor's kernels keep the thread count they were compiled with
    obs = random_obs(policy, 1, seed=1)
    diffusion = hasattr(policy, "num_inference_steps") and backend != "eager"
    t0 = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fast = accelerate(policy, backend, threads=threads)
            fast.predict_action(obs)  # onnxruntime exports at its first call
        except ValueError as exc:
            return {"error": str(exc)}
    setup_s = time.monotonic() - t0
    ran = getattr(fast, "backend", "eager")
    out = {"backend_ran": ran, "setup_s": round(setup_s, 2)}
    if caught:
        out["warning"] = str(caught[0].message)
    if ran != "eager":
        kw = (lambda: {"generator": torch.Generator().manual_seed(7)}) if diffusion else (lambda: {})
        diff = (fast.predict_action_chunk(obs, **kw()) - policy.predict_action_chunk(obs, **kw())).abs().max()
        out["max_abs_diff"] = float(diff)
    with torch.no_grad():
        for _ in range(5):
            fast.predict_action(obs)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fast.predict_action(obs)
            times.append(time.perf_counter() - t)
    return {**out, **percentiles(times)}


def run_entry(name: str, backends: list[str], threads: list[int], repeats: int, checkpoint: str | None) -> dict:
    if checkpoint:
        from robolearn.train.checkpoint import load_policy

        path, _, steps = checkpoint.partition("@")  # PATH@K: K denoising steps (diffusion, consistency)
        policy, _ = load_policy(path)
        if steps:
            policy.num_inference_steps = int(steps)
        source = f"trained checkpoint {path}" + (f" at {steps} steps" if steps else "")
    else:
        policy, source = untrained_policy(*ENTRIES[name])
    entry = {"policy": type(policy).__name__, "weights": source, "batch": 1,
             "num_inference_steps": getattr(policy, "num_inference_steps", None),
             "params": sum(p.numel() for p in policy.parameters()), "results": {}}
    for backend in backends:
        for t in threads:
            r = measure(policy, backend, t, repeats)
            entry["results"].setdefault(backend, {})[f"threads_{t}"] = r
            shown = (f"p50 {r['p50_ms']:.2f} ms p95 {r['p95_ms']:.2f} ms (ran {r['backend_ran']}, setup "
                     f"{r['setup_s']:.1f} s{', diff %.1e' % r['max_abs_diff'] if 'max_abs_diff' in r else ''})"
                     if "p50_ms" in r else r["error"])
            print(f"   {backend:12s} {t} thread(s): {shown}", flush=True)
    return entry


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", help=f"entries to run (default: all of {list(ENTRIES)} and --checkpoint's)")
    p.add_argument("--backends", nargs="*", default=list(BACKENDS), choices=BACKENDS)
    p.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    p.add_argument("--repeats", type=int, default=50, help="timed calls per setting (after 5 warm-up calls)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH[@K]",
                   help="also measure a trained checkpoint (e.g. a distilled policy) as entry NAME, at K denoising steps if @K is given; repeatable")
    p.add_argument("--note", default="", help="conditions of this run (e.g. other jobs sharing the CPU)")
    p.add_argument("--out", default="benchmarks/results/inference.json")
    args = p.parse_args()
    ckpts = dict(c.split("=", 1) for c in args.checkpoint)
    names = args.only or [*ENTRIES, *ckpts]
    machine = machine_info()
    for name in names:
        if name not in ENTRIES and name not in ckpts:
            p.error(f"unknown entry {name!r}; known: {[*ENTRIES, *ckpts]}")
        print(f"== {name}", flush=True)
        t0 = time.monotonic()
        e = run_entry(name, args.backends, args.threads, args.repeats, ckpts.get(name))
        e.update({"wall_s": round(time.monotonic() - t0, 1), "note": args.note, "machine": machine})
        save_entry(Path(args.out), "inference", name, e)


if __name__ == "__main__":
    main()
