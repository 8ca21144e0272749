"""Data-parallel training throughput: samples/s of `robolearn train` under torchrun at 1 and 2 processes.

    .venv/bin/python benchmarks/bench_ddp.py [--nprocs 1 2] [--steps 40] [--warmup-steps 5]
        [--data runs/quickstart/demos.zarr] [--note TEXT] [--out benchmarks/results/ddp.json]

The default state diffusion policy (``task=lift policy=diffusion``, global batch 128) on the Lift
demos of the quickstart (``--data``; synthetic Lift-shaped episodes when that store is missing), on
CPU with Gloo and one torch thread per process. Each process count trains ``--warmup-steps`` steps,
then the run is extended to ``--steps`` and the second session's ``samples_per_s`` (global samples
over its wall time, start-up excluded, final checkpoint included) is the measurement. The JSON keeps
one entry per process count with the speed-up over 1 process and the machine (``bench_policies``'
record). On a machine whose cores run other jobs the speed-up is a lower bound: say so in ``--note``.

The entry ``lift_diffusion_ceiling_<N>`` is what N processes could give at best: N independent
single-process runs at the per-rank batch (global batch / N), started together with no communication;
their summed samples/s over the 1-process figure bounds the speed-up that data parallelism can reach
on this machine (shared caches and memory bandwidth, smaller per-rank batches).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_policies import machine_info, save_entry  # noqa: E402

LIFT_DIMS = {"robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2, "object": 10}


def synthetic_lift(path: Path, episodes: int = 100, steps: int = 60) -> Path:
    """A store with Lift's state keys and 7-D actions, random walks (throughput only, nothing to learn)."""
    import numpy as np

    from robolearn.data.store import EpisodeStore

    rng = np.random.default_rng(0)
    store = EpisodeStore.create(path, fps=20)
    for e in range(episodes):
        for _ in range(steps):
            store.add_step({**{k: rng.standard_normal(d).astype(np.float32) for k, d in LIFT_DIMS.items()},
                            "action": rng.uniform(-1, 1, 7).astype(np.float32)})
        store.commit_episode({"seed": e})
    return path


def run(nproc: int, data: Path, run_dir: Path, steps: int) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "robolearn.cli", "train", "task=lift", "policy=diffusion", f"data.path={data}",
           f"run_dir={run_dir}", f"train.steps={steps}", "train.num_threads=1", "train.device=cpu",
           "train.val_every=100000", "train.ckpt_every=100000"]
    env = {**{k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")},
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"torchrun --nproc_per_node={nproc} failed:\n{done.stderr[-3000:]}")
    return json.loads((run_dir / "train_summary.json").read_text())


def ceiling(nproc: int, data: Path, tmp: Path, steps: int, warmup: int, batch: int) -> float:
    """Summed samples/s of ``nproc`` independent 1-process runs at batch ``batch // nproc``, run at once."""
    def cmd(run_dir: Path, n_steps: int) -> list[str]:
        return [sys.executable, "-m", "robolearn.cli", "train", "task=lift", "policy=diffusion",
                f"data.path={data}", f"run_dir={run_dir}", f"train.steps={n_steps}", "train.num_threads=1",
                "train.device=cpu", f"train.batch_size={batch // nproc}", "train.val_every=100000",
                "train.ckpt_every=100000"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    dirs = [tmp / f"ceiling{nproc}_{i}" for i in range(nproc)]
    for d in dirs:
        subprocess.run(cmd(d, warmup), env=env, capture_output=True, check=True)
    procs = [subprocess.Popen(cmd(d, steps), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for d in dirs]
    for proc, d in zip(procs, dirs):
        _, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"independent run {d.name} failed:\n{err.decode()[-3000:]}")
    return sum(json.loads((d / "train_summary.json").read_text())["samples_per_s"] for d in dirs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nprocs", type=int, nargs="*", default=[1, 2])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup-steps", type=int, default=5)
    p.add_argument("--data", default="runs/quickstart/demos.zarr")
    p.add_argument("--note", default="", help="conditions, e.g. other jobs sharing the cores")
    p.add_argument("--out", default="benchmarks/results/ddp.json")
    args = p.parse_args()
    out, machine = Path(args.out), machine_info()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data)
        source = str(data)
        if not data.exists():
            data, source = synthetic_lift(Path(tmp) / "lift.zarr"), "synthetic Lift-shaped episodes (100 x 60 steps)"
        base = None
        for n in args.nprocs:
            run_dir = Path(tmp) / f"run{n}"
            run(n, data, run_dir, args.warmup_steps)
            s = run(n, data, run_dir, args.steps)
            base = s["samples_per_s"] if base is None and n == 1 else base
            entry = {"nproc": n, "backend": "gloo", "device": s["device"], "threads_per_process": 1,
                     "global_batch": s["batch_size"], "batch_per_rank": s["batch_size_per_rank"],
                     "measured_steps": s["steps"] - s["resumed_from"], "wall_s": s["wall_s"],
                     "samples_per_s": s["samples_per_s"],
                     "speedup_vs_1": round(s["samples_per_s"] / base, 2) if base else None,
                     "config": "task=lift policy=diffusion (default state diffusion)", "data": source,
                     "n_params": s["n_params"], "note": args.note, "machine": machine}
            save_entry(out, "ddp", f"lift_diffusion_{n}proc", entry)
            print(f"{n} process(es): {s['samples_per_s']} samples/s over {entry['measured_steps']} steps "
                  f"({entry['speedup_vs_1']}x)")
        for n in args.nprocs:
            if n < 2 or base is None:
                continue
            total = ceiling(n, data, Path(tmp), args.steps, args.warmup_steps, entry["global_batch"])
            save_entry(out, "ddp", f"lift_diffusion_ceiling_{n}", {
                "nproc": n, "independent_runs": n, "batch_per_run": entry["global_batch"] // n,
                "samples_per_s": round(total, 1), "speedup_vs_1": round(total / base, 2),
                "what": f"{n} independent 1-process runs at the per-rank batch, at once (no communication): "
                        "the most data parallelism can give here", "data": source, "note": args.note,
                "machine": machine})
            print(f"ceiling, {n} independent runs: {total:.1f} samples/s ({total / base:.2f}x)")


if __name__ == "__main__":
    main()
