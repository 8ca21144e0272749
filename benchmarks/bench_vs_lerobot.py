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

``--model-step-only``: no data at all, the training step alone on a synthetic batch (issue 13's
measurement): PushT-sized low-dim obs (2 + 16 values per step), 2-D actions, ``--batch`` windows.
Ours is :class:`robolearn.train.fast_step.TrainStep` built by ``build_train_step`` from the composed
config, as ``robolearn train`` builds it (``train.compile``, ``train.bf16``, fused AdamW, foreach EMA),
plus the scheduler and EMA steps; lerobot's is ``DiffusionPolicy.forward`` on an already normalized
batch, backward, clip, AdamW. ``--pairs`` alternating runs (ours, lerobot, ours, ...), each ``--steps``
timed steps after ``--warmup`` (compilation included in ours' warm-up, and reported); medians and
spreads of samples/s. Default output ``benchmarks/results/vs_lerobot_model_step.json``.

``--policy act``: the same for ACT (our act.yaml's dimensions, :data:`ACT_DIMS`, in lerobot's ACTConfig;
one observation step, chunk 20).

Writes one JSON (default ``benchmarks/results/vs_lerobot[_model_step][_act].json``).
Only the standard library is imported at the top: the file runs in both environments.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIMS = {"down_dims": [64, 128, 256], "kernel_size": 5, "n_groups": 8, "step_embed_dim": 128,
        "horizon": 16, "n_obs_steps": 2, "n_action_steps": 8, "num_train_timesteps": 100}


def lerobot_side(args) -> dict:
    """lerobot's DiffusionPolicy (``--policy act``: ACTPolicy) training loop on the exported dataset
    (run in .venv-lerobot)."""
    import torch
    from lerobot.configs.types import FeatureType
    from lerobot.datasets.factory import resolve_delta_timestamps
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata
    from lerobot.datasets.utils import dataset_to_policy_features
    from lerobot.policies.factory import make_pre_post_processors

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    repo = "robolearn/" + Path(args.lerobot_root).name
    meta = LeRobotDatasetMetadata(repo, root=args.lerobot_root)
    feats = dataset_to_policy_features(meta.features)
    out_f = {k: f for k, f in feats.items() if f.type is FeatureType.ACTION}
    cfg = lerobot_config(args.policy, {k: f for k, f in feats.items() if k not in out_f}, out_f)
    policy = lerobot_policy(cfg)
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


ACT_DIMS = {"horizon": 20, "n_obs_steps": 1, "n_action_steps": 10, "dim_model": 256, "n_heads": 8,
            "dim_feedforward": 1024, "n_encoder_layers": 4, "n_decoder_layers": 4, "n_vae_encoder_layers": 4,
            "latent_dim": 32, "kl_weight": 10.0, "dropout": 0.1}  # our act.yaml's defaults
OBS_DIMS = {"agent_pos": 2, "keypoints": 16}  # --model-step-only: PushT's low-dim obs (lerobot: state, environment_state)
ACTION_DIM = 2


def lerobot_config(policy: str, input_features: dict, output_features: dict):
    """lerobot's DiffusionConfig or ACTConfig with :data:`DIMS` / :data:`ACT_DIMS` (in .venv-lerobot)."""
    common = dict(input_features=input_features, output_features=output_features, device="cpu", push_to_hub=False)
    if policy == "act":
        from lerobot.policies.act.configuration_act import ACTConfig

        a = ACT_DIMS
        return ACTConfig(**common, n_obs_steps=1, chunk_size=a["horizon"], n_action_steps=a["n_action_steps"],
                         dim_model=a["dim_model"], n_heads=a["n_heads"], dim_feedforward=a["dim_feedforward"],
                         n_encoder_layers=a["n_encoder_layers"], n_decoder_layers=a["n_decoder_layers"],
                         n_vae_encoder_layers=a["n_vae_encoder_layers"], latent_dim=a["latent_dim"],
                         kl_weight=a["kl_weight"], dropout=a["dropout"], use_vae=True)
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig

    d = DIMS
    return DiffusionConfig(**common, n_obs_steps=d["n_obs_steps"], horizon=d["horizon"], n_action_steps=d["n_action_steps"],
                           down_dims=tuple(d["down_dims"]), kernel_size=d["kernel_size"], n_groups=d["n_groups"],
                           diffusion_step_embed_dim=d["step_embed_dim"], num_train_timesteps=d["num_train_timesteps"])


def lerobot_policy(cfg):
    """The lerobot policy of ``cfg`` (DiffusionPolicy or ACTPolicy), in training mode."""
    if type(cfg).__name__ == "ACTConfig":
        from lerobot.policies.act.modeling_act import ACTPolicy as cls
    else:
        from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy as cls
    return cls(cfg).train()


def our_dims(policy: str) -> list[str]:
    """Our config overrides for the same dimensions as :func:`lerobot_config`."""
    if policy == "act":
        return ["policy=act", *(f"policy.{k}={v}" for k, v in ACT_DIMS.items())]
    d = DIMS
    return [f"policy.down_dims=[{','.join(map(str, d['down_dims']))}]", f"policy.kernel_size={d['kernel_size']}",
            f"policy.n_groups={d['n_groups']}", f"policy.step_embed_dim={d['step_embed_dim']}",
            f"policy.horizon={d['horizon']}", f"policy.n_obs_steps={d['n_obs_steps']}",
            f"policy.n_action_steps={d['n_action_steps']}", f"policy.num_train_timesteps={d['num_train_timesteps']}"]


def _machine() -> dict:
    """This machine (bench_policies.machine_info: CPU count and model, platform, Python) and its
    1-minute load average."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_policies import machine_info

    return {**machine_info(), "load_average_1min": round(os.getloadavg()[0], 2)}


def _spread(samples_per_s: list[float]) -> dict:
    s = sorted(samples_per_s)
    return {"median": s[len(s) // 2] if len(s) % 2 else round((s[len(s) // 2 - 1] + s[len(s) // 2]) / 2, 1),
            "min": s[0], "max": s[-1], "runs": samples_per_s}


def lerobot_model_step(args) -> dict:
    """lerobot's DiffusionPolicy (or, ``--policy act``, ACTPolicy) training step alone on a synthetic
    normalized batch (in .venv-lerobot): samples/s of ``--steps`` steps after ``--warmup``."""
    import torch
    from lerobot.configs.types import FeatureType, PolicyFeature

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    state, env = OBS_DIMS.values()
    B = args.batch
    policy = lerobot_policy(lerobot_config(
        args.policy, {"observation.state": PolicyFeature(FeatureType.STATE, (state,)),
                      "observation.environment_state": PolicyFeature(FeatureType.ENV, (env,))},
        {"action": PolicyFeature(FeatureType.ACTION, (ACTION_DIM,))}))
    if args.policy == "act":  # one observation step: (B, D)
        T = ACT_DIMS["horizon"]
        batch = {"observation.state": torch.randn(B, state), "observation.environment_state": torch.randn(B, env)}
    else:
        To, T = DIMS["n_obs_steps"], DIMS["horizon"]
        batch = {"observation.state": torch.randn(B, To, state), "observation.environment_state": torch.randn(B, To, env)}
    batch.update({"action": torch.randn(B, T, ACTION_DIM), "action_is_pad": torch.zeros(B, T, dtype=torch.bool)})
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4, weight_decay=1e-6)

    def step():
        loss, _ = policy.forward(dict(batch))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 10.0)
        opt.step()

    for _ in range(args.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    return {"samples_per_s": round(args.steps * B / (time.perf_counter() - t0), 1),
            "params": sum(p.numel() for p in policy.parameters()), "torch": torch.__version__}


class OurModelStep:
    """Our training step as ``robolearn train`` runs it (:func:`robolearn.train.fast_step.build_train_step`
    from the composed config, then the scheduler and EMA steps), on a synthetic batch."""

    def __init__(self, args, overrides: list[str]):
        import numpy as np
        import torch
        from diffusers.optimization import get_scheduler
        from omegaconf import OmegaConf

        from robolearn.data.normalizer import compute_stats
        from robolearn.policies import build_policy
        from robolearn.train import distributed
        from robolearn.train.fast_step import build_train_step, make_ema, make_optimizer
        from robolearn.utils.config import load_config

        d = ACT_DIMS if args.policy == "act" else DIMS
        cfg = load_config(["task=pusht", f"train.batch_size={args.batch}", f"train.num_threads={args.threads}", *our_dims(args.policy),
                           *overrides])
        tc = cfg.train
        torch.set_num_threads(args.threads)
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        stats = compute_stats({**{k: rng.normal(size=(100, n)) for k, n in OBS_DIMS.items()},
                               "action": rng.normal(size=(100, ACTION_DIM))})
        self.policy = build_policy(OmegaConf.to_container(cfg.policy, resolve=True), {k: (n,) for k, n in OBS_DIMS.items()},
                                   ACTION_DIM, stats=stats).train()
        ctx = distributed.DistContext(0, 1, 0, torch.device("cpu"))
        self.opt = make_optimizer(self.policy.parameters(), tc.lr, tc.weight_decay, ctx.device)
        self.sched = get_scheduler("cosine", optimizer=self.opt, num_warmup_steps=tc.warmup_steps, num_training_steps=tc.steps)
        self.ema = make_ema(self.policy.parameters(), tc.ema_max_decay, tc.ema_power)
        self.step_fn = build_train_step(distributed.loss_module(self.policy, ctx), self.policy, self.opt, tc, ctx, args.batch)
        B, To, T = args.batch, d["n_obs_steps"], d["horizon"]
        self.batch = {**{f"obs.{k}": torch.randn(B, To, n) for k, n in OBS_DIMS.items()}, "action": torch.randn(B, T, ACTION_DIM)}
        self.B, self.overrides = B, overrides
        t0 = time.perf_counter()
        self()
        self.first_step_s = round(time.perf_counter() - t0, 2)  # compilation, when train.compile
        self.params = sum(p.numel() for p in self.policy.parameters())

    def __call__(self) -> float:
        loss, info, _ = self.step_fn(self.batch)
        self.sched.step()
        self.ema.step(self.policy.parameters())
        return float(loss)

    def time(self, steps: int) -> float:
        """samples/s of ``steps`` steps."""
        t0 = time.perf_counter()
        for _ in range(steps):
            self()
        return round(steps * self.B / (time.perf_counter() - t0), 1)


def model_step_only(args) -> dict:
    """``--model-step-only``: ours (each ``--variant``) and lerobot's step, alternating ``--pairs`` times."""
    import torch

    from robolearn.apps.convert import lerobot_venv

    variants = {v: OurModelStep(args, v.split()) for v in args.variant}
    for v in variants.values():
        for _ in range(args.warmup):
            v()
    py = lerobot_venv() / "bin" / "python"
    ours_runs = {v: [] for v in variants}
    theirs, lerobot_info = [], {}
    for _ in range(args.pairs):
        for name, v in variants.items():
            ours_runs[name].append(v.time(args.steps))
        if py.exists():
            side = subprocess.run([str(py), __file__, "--lerobot-side", "--model-step-only", "--steps", str(args.steps),
                                   "--warmup", str(args.warmup), "--batch", str(args.batch), "--threads", str(args.threads),
                                   "--policy", args.policy],
                                  capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            if side.returncode != 0:
                sys.exit(f"lerobot side failed:\n{side.stderr[-3000:]}")
            lerobot_info = json.loads(side.stdout.strip().splitlines()[-1])
            theirs.append(lerobot_info.pop("samples_per_s"))
    ours = {name: {**_spread(runs), "first_step_s": variants[name].first_step_s, "params": variants[name].params,
                   "compiled": variants[name].step_fn.compiled} for name, runs in ours_runs.items()}
    result = {"mode": "model step only (synthetic batch)", "policy": args.policy, "batch": args.batch,
              "threads": args.threads, "steps_per_run": args.steps, "warmup": args.warmup, "pairs": args.pairs,
              "dims": ACT_DIMS if args.policy == "act" else DIMS,
              "obs_dims": OBS_DIMS, "action_dim": ACTION_DIM, "torch": torch.__version__, "ours": ours,
              "machine": _machine()}
    if theirs:
        result["lerobot"] = {**_spread(theirs), **lerobot_info}
        result["ratio_median"] = {name: round(o["median"] / result["lerobot"]["median"], 3) for name, o in ours.items()}
    else:
        result["lerobot"] = f"not measured: {py} missing (make lerobot-env)"
    return result


def ours(args, store: Path, run_dir: Path, extra: list[str]) -> dict:
    import numpy as np
    import torch

    from robolearn.apps.train import train_from_overrides
    from robolearn.data.training import TrainingData
    from robolearn.utils.config import load_config

    import shutil

    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run each time, not a resumed one
    overrides = ["task=pusht", f"data.path={store}", f"run_dir={run_dir}", f"train.steps={args.steps}",
                 f"train.batch_size={args.batch}", f"train.num_threads={args.threads}", "data.val_ratio=0",
                 f"train.val_every={args.steps}", f"train.ckpt_every={args.steps}", f"train.log_every={args.steps}",
                 *our_dims(args.policy), *extra]
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
    p.add_argument("--model-step-only", action="store_true",
                   help="the training step alone on a synthetic batch (no data loading); see the module docstring")
    p.add_argument("--pairs", type=int, default=3, help="--model-step-only: alternating runs of ours and lerobot's")
    p.add_argument("--warmup", type=int, default=5, help="--model-step-only: untimed steps first")
    p.add_argument("--variant", action="append",
                   help="our config overrides, space-separated, one variant per flag "
                        "(default: the config's defaults, i.e. one variant '')")
    p.add_argument("--policy", choices=["diffusion", "act"], default="diffusion",
                   help="the policy trained (results: vs_lerobot[_model_step][_act].json)")
    p.add_argument("--lerobot-side", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--lerobot-root", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.lerobot_side:
        print(json.dumps(lerobot_model_step(args) if args.model_step_only else lerobot_side(args)))
        return
    if args.model_step_only:
        args.variant = args.variant or [""]
        result = model_step_only(args)
        default = ROOT / "benchmarks" / "results" / f"vs_lerobot_model_step{'_act' if args.policy == 'act' else ''}.json"
        out = Path(args.out if args.out != p.get_default("out") else default)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
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
    args.variant = args.variant or [""]
    ours_result = {v: ours(args, store, work / f"ours_{args.policy}_{args.steps}_{i}", v.split())
                   for i, v in enumerate(args.variant)}
    side = subprocess.run([str(lerobot_venv() / "bin" / "python"), __file__, "--lerobot-side", "--lerobot-root",
                           str(exported), "--steps", str(args.steps), "--batch", str(args.batch), "--threads",
                           str(args.threads), "--policy", args.policy], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if side.returncode != 0:
        sys.exit(f"lerobot side failed:\n{side.stderr[-3000:]}")
    theirs = json.loads(side.stdout.strip().splitlines()[-1])
    result = {"task": "pusht (scripted demos)", "policy": args.policy, "episodes": args.episodes, "steps": args.steps, "batch": args.batch,
              "threads": args.threads, "dims": ACT_DIMS if args.policy == "act" else DIMS, "ours": ours_result, "lerobot": theirs,
              "ratio_samples_per_s": {v: round(o["samples_per_s"] / theirs["samples_per_s"], 3) for v, o in ours_result.items()},
              "machine": _machine()}
    out = Path(args.out if args.out != p.get_default("out") or args.policy != "act" else
               ROOT / "benchmarks" / "results" / "vs_lerobot_act.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
