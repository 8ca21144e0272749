"""Core speed benchmark: training throughput, inference latency, simulation speed.

    python benchmarks/bench_core.py [--out benchmarks/results/core.json] [--train-steps 30]

Measures, at the default config (configs/config.yaml):
* training samples/s of the diffusion policy (batch of the default train config, Lift-sized
  observations and actions, synthetic data so the number is the model's, not the loader's);
* ``predict_action`` latency at batch 1 (ms, median and p95) with the default DDIM step count;
* env steps/s of the robosuite Lift adapter (random actions, resets included), and of our own
  insertion and PushT tasks (random actions; and with the scripted expert acting, expert time
  excluded), one core;
* camera images (Lift agentview 84x84, PushT top 96x96): render ms per frame, and per store image
  codec bytes per frame, encode and decode frames/s and the mean absolute pixel error.
Writes one JSON object with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch


def machine() -> dict:
    return {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def bench_training(cfg, steps: int) -> dict:
    from robolearn.data.normalizer import compute_stats
    from robolearn.policies import build_policy
    from omegaconf import OmegaConf

    rng = np.random.default_rng(0)
    obs_shapes = {"robot0_eef_pos": (3,), "robot0_eef_quat": (4,), "robot0_gripper_qpos": (2,), "object": (10,)}
    stats = compute_stats({**{k: rng.normal(size=(100, *s)) for k, s in obs_shapes.items()},
                           "action": rng.normal(size=(100, 7))})
    policy = build_policy(OmegaConf.to_container(cfg.policy), obs_shapes, 7, stats=stats)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4)
    B, To, T = cfg.train.batch_size, cfg.policy.n_obs_steps, cfg.policy.horizon
    batch = {f"obs.{k}": torch.randn(B, To, *s) for k, s in obs_shapes.items()}
    batch["action"] = torch.randn(B, T, 7)
    times = []
    for i in range(steps + 3):
        t = time.perf_counter()
        loss, _ = policy.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 3:
            times.append(time.perf_counter() - t)
    policy.eval()
    obs = {k: torch.randn(1, To, *s) for k, s in obs_shapes.items()}
    lat = []
    for i in range(40):
        t = time.perf_counter()
        policy.predict_action(obs)
        if i >= 5:
            lat.append((time.perf_counter() - t) * 1e3)
    return {
        "n_params": sum(p.numel() for p in policy.parameters()),
        "down_dims": list(cfg.policy.down_dims), "batch_size": B,
        "train_step_s_median": round(float(np.median(times)), 4),
        "train_samples_per_s": round(B / float(np.median(times)), 1),
        "predict_action_ms_median": round(float(np.median(lat)), 2),
        "predict_action_ms_p95": round(float(np.percentile(lat, 95)), 2),
        "num_inference_steps": cfg.policy.num_inference_steps,
    }


def bench_env(cfg, steps: int) -> dict:
    from robolearn.envs import make_env

    env = make_env(cfg.task)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    for _ in range(50):  # warm-up (numba JIT in robosuite's controllers)
        env.step(env.action_space.sample())
    t = time.perf_counter()
    resets = 0
    env.reset(seed=1)
    for i in range(steps):
        _, _, term, trunc, _ = env.step(rng.uniform(env.action_space.low, env.action_space.high))
        if term or trunc:
            env.reset(seed=2 + i)
            resets += 1
    dt = time.perf_counter() - t
    t = time.perf_counter()
    for s in range(20):
        env.reset(seed=100 + s)
    reset_ms = (time.perf_counter() - t) / 20 * 1e3
    env.close()
    return {"task": cfg.task.name, "env_steps_per_s": round(steps / dt, 1), "steps": steps, "resets": resets,
            "reset_ms": round(reset_ms, 2)}


def bench_expert_env(task_cfg, episodes: int) -> dict:
    """Env steps/s with the scripted expert acting (contacts, grasp, insertion), expert time excluded."""
    from robolearn.envs import make_env, make_expert

    env, expert = make_env(task_cfg), make_expert(task_cfg.name)
    steps, env_s, successes = 0, 0.0, 0
    for seed in range(episodes):
        obs, _ = env.reset(seed=seed)
        expert.reset()
        for _ in range(env.max_episode_steps):
            action = expert(obs)
            t = time.perf_counter()
            obs, _, term, trunc, info = env.step(action)
            env_s += time.perf_counter() - t
            steps += 1
            if term or trunc:
                break
        successes += bool(info["is_success"])
    return {"task": task_cfg.name, "env_steps_per_s_expert": round(steps / env_s, 1), "expert_steps": steps,
            "expert_success": f"{successes}/{episodes}"}


def bench_images(task_overrides: list[str], frames: int = 200) -> dict:
    """Camera rendering ms per frame, then per image codec: bytes per frame in the store and decode
    frames/s, on frames of scripted-expert episodes."""
    import os
    import shutil
    import tempfile

    from robolearn.data.store import IMAGE_CODECS, EpisodeStore, KeyInfo
    from robolearn.envs import make_env, make_expert
    from robolearn.utils.config import load_config

    cfg = load_config(task_overrides)
    env, expert = make_env(cfg.task), make_expert(cfg.task.get("env") or cfg.task.name)
    key = f"{cfg.task.cameras[0]}_image"
    images, render_s, seed = [], 0.0, 0
    while len(images) < frames:
        obs, _ = env.reset(seed=seed)
        expert.reset()
        seed += 1
        for _ in range(env.max_episode_steps):
            images.append(obs[key])
            obs, _, term, trunc, _ = env.step(expert(obs))
            t = time.perf_counter()
            env.cameras.obs(env.model, env.data)
            render_s += time.perf_counter() - t
            if term or trunc or len(images) >= frames:
                break
    env.close()
    out = {"task": cfg.task.name, "camera": cfg.task.cameras[0], "shape": list(images[0].shape),
           "render_ms_per_frame": round(render_s / len(images) * 1e3, 2), "codecs": {}}
    tmp = Path(tempfile.mkdtemp())
    try:
        for codec in IMAGE_CODECS:
            path = tmp / f"{codec}.zarr"
            store = EpisodeStore.create(path)
            store.define_key(key, KeyInfo(images[0].shape, "uint8", codec=codec))
            t = time.perf_counter()
            for im in images:
                store.add_step({key: im})
            store.commit_episode()
            write_s = time.perf_counter() - t
            arr_dir = path / "data" / key
            nbytes = sum(f.stat().st_size for f in arr_dir.iterdir() if not f.name.startswith("."))
            t = time.perf_counter()
            back = EpisodeStore.open(path).load([key])[key]
            decode_s = time.perf_counter() - t
            err = float(np.abs(back.astype(np.int16) - np.stack(images)).mean())
            out["codecs"][codec] = {"bytes_per_frame": round(nbytes / len(images)), "raw_bytes_per_frame": images[0].size,
                                    "encode_frames_per_s": round(len(images) / write_s),
                                    "decode_frames_per_s": round(len(images) / decode_s), "mean_abs_error": round(err, 3)}
            shutil.rmtree(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out["mujoco_gl"] = os.environ.get("MUJOCO_GL")
    return out


def main():
    from robolearn.utils.config import load_config

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/core.json")
    ap.add_argument("--train-steps", type=int, default=30)
    ap.add_argument("--env-steps", type=int, default=1000)
    args = ap.parse_args()
    cfg = load_config()
    insertion = load_config(["task=insertion"])
    pusht = load_config(["task=pusht"])
    result = {"benchmark": "core", "machine": machine(), "training": bench_training(cfg, args.train_steps),
              "env": bench_env(cfg, args.env_steps),
              "env_insertion": {**bench_env(insertion, 10 * args.env_steps),
                                **bench_expert_env(insertion.task, 200)},
              "env_pusht": {**bench_env(pusht, 10 * args.env_steps), **bench_expert_env(pusht.task, 50)},
              "images_lift": bench_images(["task=lift", "task.cameras=[agentview]"]),
              "images_pusht": bench_images(["task=pusht", "task.cameras=[top]"])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
