"""Training throughput side by side: our diffusion trainer vs lerobot 0.4.4's DiffusionPolicy loop,
on the same demonstrations and the same model dimensions, on one machine in one run.

    .venv/bin/python benchmarks/bench_vs_lerobot.py [--steps 300] [--episodes 50] [--out FILE]

1. Scripted PushT demos (``robolearn collect --task pusht``) in a Zarr store.
2. The store exported to LeRobot v3 with ``robolearn convert`` (lerobot's own API, in .venv-lerobot):
   ``agent_pos`` -> ``observation.state``, ``keypoints`` -> ``observation.environment_state``.
3. Ours: ``robolearn train task=pusht`` for ``--steps`` steps (samples/s from its train_summary.json,
   which includes data loading), and the time to build one batch with our sampler.
4. lerobot's: this file re-run with ``--lerobot-side`` in .venv-lerobot: ``DiffusionPolicy`` with the
   same U-Net down dims, kernel, groups, step embedding, horizon, n_obs_steps, n_action_steps and
   batch, lerobot's preprocessor, its ``LeRobotDataset`` with the policy's delta timestamps through a
   ``DataLoader`` (num_workers 0, as our trainer), AdamW; samples/s over the steps after a warm-up, and
   the data-loading time per batch.

Writes one JSON (default ``benchmarks/results/vs_lerobot.json``). Diffusion only so far (ACT not yet).
Only the standard library is imported at the top: the file runs in both environments.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIMS = {"down_dims": [64, 128, 256], "kernel_size": 5, "n_groups": 8, "step_embed_dim": 128,
        "horizon": 16, "n_obs_steps": 2, "n_action_steps": 8, "num_train_timesteps": 100}


def lerobot_side(args) -> dict:
    """lerobot's DiffusionPolicy training loop on the exported dataset (run in .venv-lerobot)."""
    import torch
    from lerobot.configs.types import FeatureType
    from lerobot.datasets.factory import resolve_delta_timestamps
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata
    from lerobot.datasets.utils import dataset_to_policy_features
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
    from lerobot.policies.factory import make_pre_post_processors

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    repo = "robolearn/" + Path(args.lerobot_root).name
    meta = LeRobotDatasetMetadata(repo, root=args.lerobot_root)
    feats = dataset_to_policy_features(meta.features)
    out_f = {k: f for k, f in feats.items() if f.type is FeatureType.ACTION}
    in_f = {k: f for k, f in feats.items() if k not in out_f}
    cfg = DiffusionConfig(input_features=in_f, output_features=out_f, n_obs_steps=DIMS["n_obs_steps"],
                          horizon=DIMS["horizon"], n_action_steps=DIMS["n_action_steps"],
                          down_dims=tuple(DIMS["down_dims"]), kernel_size=DIMS["kernel_size"],
                          n_groups=DIMS["n_groups"], diffusion_step_embed_dim=DIMS["step_embed_dim"],
                          num_train_timesteps=DIMS["num_train_timesteps"], device="cpu", push_to_hub=False)
    policy = DiffusionPolicy(cfg)
    policy.train()
    pre, _ = make_pre_post_processors(cfg, dataset_stats=meta.stats)
    ds = LeRobotDataset(repo, root=args.lerobot_root, delta_timestamps=resolve_delta_timestamps(cfg, meta))
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch, shuffle=True, num_workers=0, drop_last=True)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4, weight_decay=1e-6)
    it = iter(loader)
    data_s, step_s, warm = [], [], min(5, args.steps // 4)
    for step in range(args.steps):
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        batch = pre(batch)
        t1 = time.perf_counter()
        loss, _ = policy.forward(batch)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 10.0)
        opt.step()
        t2 = time.perf_counter()
        if step >= warm:
            data_s.append(t1 - t0)
            step_s.append(t2 - t1)
    total = sum(data_s) + sum(step_s)
    return {"samples_per_s": round(len(step_s) * args.batch / total, 1),
            "model_step_samples_per_s": round(len(step_s) * args.batch / sum(step_s), 1),
            "data_s_per_batch": round(sum(data_s) / len(data_s), 5), "steps_timed": len(step_s),
            "params": sum(p.numel() for p in policy.parameters()), "torch": torch.__version__}


def ours(args, store: Path, run_dir: Path) -> dict:
    import numpy as np
    import torch

    from robolearn.apps.train import train_from_overrides
    from robolearn.data.training import TrainingData
    from robolearn.utils.config import load_config

    d = DIMS
    overrides = ["task=pusht", f"data.path={store}", f"run_dir={run_dir}", f"train.steps={args.steps}",
                 f"train.batch_size={args.batch}", f"train.num_threads={args.threads}", "data.val_ratio=0",
                 f"train.val_every={args.steps}", f"train.ckpt_every={args.steps}", f"train.log_every={args.steps}",
                 f"policy.down_dims=[{','.join(map(str, d['down_dims']))}]", f"policy.kernel_size={d['kernel_size']}",
                 f"policy.n_groups={d['n_groups']}", f"policy.step_embed_dim={d['step_embed_dim']}",
                 f"policy.horizon={d['horizon']}", f"policy.n_obs_steps={d['n_obs_steps']}",
                 f"policy.n_action_steps={d['n_action_steps']}", f"policy.num_train_timesteps={d['num_train_timesteps']}"]
    train_from_overrides(overrides, progress=False)
    summary = json.loads((run_dir / "train_summary.json").read_text())
    data = TrainingData(load_config(overrides))
    rng = np.random.default_rng(0)
    n = len(data.train)
    t0 = time.perf_counter()
    for _ in range(20):
        data.batch(data.train, rng.integers(0, n, args.batch))
    data_s = (time.perf_counter() - t0) / 20
    from robolearn.train.checkpoint import load_policy

    policy, _ = load_policy(run_dir)
    return {"samples_per_s": summary.get("samples_per_s"), "data_s_per_batch": round(data_s, 5),
            "wall_s": summary.get("wall_s"), "params": sum(p.numel() for p in policy.parameters()),
            "torch": torch.__version__}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", default=str(ROOT / "runs" / "bench_vs_lerobot"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "vs_lerobot.json"))
    p.add_argument("--lerobot-side", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--lerobot-root", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.lerobot_side:
        print(json.dumps(lerobot_side(args)))
        return

    from robolearn.apps.collect import collect
    from robolearn.apps.convert import convert, lerobot_venv

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    store, exported = work / f"pusht_{args.episodes}.zarr", work / f"pusht_{args.episodes}_lerobot"
    if not store.exists():
        collect("pusht", args.episodes, out=store, progress=False)
    if not exported.exists():
        res = convert(store, exported, progress=False, rename=["keypoints=observation.environment_state"])
        if res.get("returncode", 0) != 0:
            sys.exit(f"export to LeRobot failed (exit {res['returncode']})")
    ours_result = ours(args, store, work / f"ours_{args.steps}")
    side = subprocess.run([str(lerobot_venv() / "bin" / "python"), __file__, "--lerobot-side", "--lerobot-root",
                           str(exported), "--steps", str(args.steps), "--batch", str(args.batch), "--threads",
                           str(args.threads)], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if side.returncode != 0:
        sys.exit(f"lerobot side failed:\n{side.stderr[-3000:]}")
    theirs = json.loads(side.stdout.strip().splitlines()[-1])
    result = {"task": "pusht (scripted demos)", "episodes": args.episodes, "steps": args.steps, "batch": args.batch,
              "threads": args.threads, "dims": DIMS, "ours": ours_result, "lerobot": theirs,
              "ratio_samples_per_s": round(ours_result["samples_per_s"] / theirs["samples_per_s"], 3),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
              "note": "diffusion only; ACT not measured yet"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
