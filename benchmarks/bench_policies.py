"""Learning-quality benchmark: scripted demos → training → success rate on held-out seeds, per task and policy.

    .venv/bin/python benchmarks/bench_policies.py [--only NAME ...] [--episodes 50]
        [--out benchmarks/results/policies.json]

Each entry collects its demonstrations (reused when the store already holds enough), trains with its
config (a finished run is reused: the trainer resumes from its last checkpoint and returns), and
evaluates the EMA weights on ``--episodes`` held-out seeds in parallel env processes (``--reuse-eval``
takes an evaluation already saved in the run). The JSON keeps
one record per entry (results of entries not run this time are kept from the previous file): demos
used, training steps, batch size, parameters, training wall time and samples/s, success rate with
its 95 % Wilson interval, evaluation wall time, and the machine. These runs take minutes to an hour
each on a 2-core CPU: this is a benchmark, not a test. Entries with a ``source`` (e.g.
``pusht_diffusion_22k``) are earlier outputs of this script, kept under another name when their
entry was re-run; ``benchmarks/readme_tables.py`` writes the README's tables from this file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

#: name -> (config overrides, scripted episodes to attempt; failed ones are dropped)
ENTRIES: dict[str, tuple[list[str], int]] = {
    # The quickstart's run (`make quickstart`): the same data and schedule.
    "lift_diffusion": (["task=lift", "policy=diffusion", "data.path=runs/quickstart/demos.zarr",
                        "run_dir=runs/quickstart/train"], 100),
    "lift_act": (["task=lift", "policy=act_small", "train.batch_size=64", "train.lr=1e-4", "train.steps=4000",
                  "data.path=runs/quickstart/demos.zarr", "run_dir=runs/lift_act"], 100),
    "lift_act_long": (["task=lift", "policy=act_small", "train.batch_size=64", "train.lr=3e-4", "train.steps=6000",
                       "train.num_threads=1", "data.path=runs/quickstart/demos.zarr", "run_dir=runs/lift_act_long"], 100),
    "lift_image_diffusion": (["task=lift_image", "policy=diffusion_image", "train.batch_size=64", "train.steps=4000",
                              "data.path=runs/lift_image/demos.zarr", "run_dir=runs/lift_image/diffusion"], 200),
    # Block as keypoints (the task's default obs_keys), 500 expert attempts. The measured run was
    # stopped and resumed with other train.steps (12000 to step 7,500, 26000 to 14,500, 22000 to
    # 22,000, then 56000), each resume re-targeting the cosine decay (so the learning rate rose again
    # at 22,000): a single run with 56000 differs.
    "pusht_diffusion": (["task=pusht", "policy=diffusion", "train.steps=56000", "train.num_threads=2",
                         "data.path=runs/pusht/demos_kp.zarr", "run_dir=runs/pusht/diffusion_kp_long"], 500),
    "can_diffusion": (["task=can", "policy=diffusion", "train.steps=8000", "data.path=runs/can/demos.zarr",
                       "run_dir=runs/can/diffusion"], 200),
    "can_act": (["task=can", "policy=act_small", "train.batch_size=64", "train.lr=3e-4", "train.steps=6000",
                 "train.num_threads=1", "data.path=runs/can/demos.zarr", "run_dir=runs/can/act"], 200),
    "insertion_diffusion": (["task=insertion", "policy=diffusion", "data.path=runs/insertion/demos.zarr",
                             "run_dir=runs/insertion_diffusion"], 100),
    "insertion_act": (["task=insertion", "policy=act_small", "train.batch_size=64", "train.lr=3e-4",
                       "train.steps=3000", "train.num_threads=2", "data.path=runs/insertion/demos.zarr",
                       "run_dir=runs/insertion_act"], 100),
    # gym-pusht (the peers' PushT, robolearn/envs/gym_pusht.py), 200 scripted demos; ACT as on Can.
    "gym_pusht_act": (["task=gym_pusht", "policy=act_small", "train.batch_size=64", "train.lr=3e-4", "train.steps=6000",
                       "train.num_threads=1", "data.path=runs/gym_pusht/demos.zarr", "run_dir=runs/gym_pusht/act"], 200),
    # gym-pusht's PushT with DP's low-dim observation: the run our PushT needed (500 scripted demos,
    # 56,000 x 128, 2 actions per chunk at evaluation), compiled, two threads: ~4 h here, so it is
    # trained over several sessions (the command resumes the run from its last checkpoint).
    "gym_pusht_diffusion": (["task=gym_pusht", "policy=diffusion", "train=long", "train.steps=56000",
                             "train.compile=true", "train.num_threads=2", "data.path=runs/gym_pusht/demos_500.zarr",
                             "run_dir=runs/gym_pusht/diffusion"], 500),
    # gym-pusht from pixels as DP's image PushT (96 x 96 image + agent_pos, crop 84 as DP's), 200
    # scripted demos, the CPU-sized image encoder, 4000 x 64 (~lift_image_diffusion's budget): a row
    # to set beside DP's 0.84, sized for one session, not its 3000 epochs.
    "gym_pusht_image_diffusion": (["task=gym_pusht_image", "policy=diffusion_image", "policy.vision.crop=[84,84]",
                                   "train.batch_size=64", "train.steps=4000", "data.path=runs/gym_pusht/demos_image.zarr",
                                   "run_dir=runs/gym_pusht/image_diffusion"], 200),
    # SO-101 pick and place from state (the cube's pose among the observations), 200 scripted demos,
    # the default schedule: beside the image run, what the policy does when it need not find the cube.
    "so101_pick_diffusion": (["task=so101_pick", "policy=diffusion", "data.path=runs/so101/demos.zarr",
                              "run_dir=runs/so101/diffusion"], 200),
    # The same run continued to 6,000 steps (resumed from the 3,000-step checkpoint, cosine decay re-targeted).
    "so101_pick_diffusion_6k": (["task=so101_pick", "policy=diffusion", "train.steps=6000",
                                 "data.path=runs/so101/demos.zarr", "run_dir=runs/so101/diffusion"], 200),
    # SO-101 pick and place from the top and wrist cameras (96 x 96, crop 84 as DP's image PushT) and
    # the arm's joints, 200 scripted demos, the CPU-sized image encoder, 4000 x 64 (lift_image_diffusion's
    # budget): the policy `robolearn deploy --robot so101_sim` runs on the SO-101 twin.
    "so101_pick_image_diffusion": (["task=so101_pick_image", "policy=diffusion_image", "policy.vision.crop=[84,84]",
                                    "train.batch_size=64", "train.steps=4000", "data.path=runs/so101/demos_image.zarr",
                                    "run_dir=runs/so101/image_diffusion"], 200),
    # robosuite NutAssemblySquare, >= 200 scripted demos (220 attempts), the long schedule's warm-up,
    # compiled. 8000 steps at one thread (square_diffusion_8k) ended with the validation loss still
    # falling: 20000 steps at two threads.
    "square_diffusion": (["task=square", "policy=diffusion", "train=long", "train.steps=20000",
                          "train.compile=true", "train.num_threads=2", "data.path=runs/square/demos.zarr",
                          "run_dir=runs/square/diffusion"], 220),
}

#: name -> evaluate_checkpoint options (PushT's last millimetres need feedback: 2 actions per chunk)
EVAL_OPTIONS: dict[str, dict] = {"pusht_diffusion": {"n_action_steps": 2}, "gym_pusht_diffusion": {"n_action_steps": 2},
                                 "gym_pusht_image_diffusion": {"n_action_steps": 2}}


def run_entry(name: str, episodes: int, reuse_eval: bool = False) -> dict:
    from robolearn.data.store import EpisodeStore
    from robolearn.apps.collect import collect_demos
    from robolearn.eval.rollout import evaluate_checkpoint
    from robolearn.train.trainer import train
    from robolearn.utils.config import load_config
    from robolearn.utils.errors import StoreError

    overrides, n_demos = ENTRIES[name]
    cfg = load_config(overrides)
    t = time.monotonic()
    try:
        have = EpisodeStore.open(cfg.data.path).n_episodes
    except StoreError:
        have = 0
    if have < 0.9 * n_demos:  # n_demos attempts; the expert's rare failures are dropped
        collect_demos(cfg.task, cfg.data.path, n_demos, overwrite=True)
    collect_s = time.monotonic() - t
    ckpt = train(cfg)
    summary = json.loads((Path(cfg.run_dir) / "train_summary.json").read_text())
    saved = Path(cfg.run_dir) / f"eval_{episodes}.json"  # what `robolearn eval RUN --episodes N` writes
    options = EVAL_OPTIONS.get(name, {})
    result = json.loads(saved.read_text()) if reuse_eval and saved.is_file() else None
    if result is None or any(result.get(k) != v for k, v in options.items()):  # none, or made otherwise
        result = evaluate_checkpoint(ckpt, episodes, **options)
        saved.write_text(json.dumps(result, indent=2))
    return {
        "task": cfg.task.name, "policy": cfg.policy.name, "overrides": overrides,
        "demos": summary.get("n_episodes"), "collect_s": round(collect_s, 1),
        "train_steps": summary.get("steps"), "batch_size": int(cfg.train.batch_size),
        "n_params": summary.get("n_params"), "train_wall_s": summary.get("wall_s_total", summary.get("wall_s")),
        "samples_per_s": summary.get("samples_per_s"),
        "success_rate": result["success_rate"], "success_ci95": result["success_ci95"],
        "eval_options": options,
        "n_episodes": result["n_episodes"], "mean_episode_length": result["mean_episode_length"],
        **{k: round(v, 4) for k, v in result.items() if k.startswith("mean_max_")},
        "eval_wall_s": result["wall_s"], "seeds": result["seeds"],
    }


def machine_info() -> dict:
    """The machine a benchmark entry was measured on (what ``readme_tables.py`` labels M1, M2, ...)."""
    cpuinfo = Path("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("model name")), None) if cpuinfo.exists() else None
    return {"cpu_count": os.cpu_count(), "cpu_model": model or platform.processor() or None,
            "platform": platform.platform(), "python": platform.python_version()}


def save_entry(out: Path, benchmark: str, name: str, entry: dict) -> None:
    """Add or replace entry ``name`` of the results file ``out`` (``{"benchmark", "entries"}``), re-read
    just before writing: another run of a benchmark may have added entries meanwhile."""
    results = json.loads(out.read_text()) if out.is_file() else {"benchmark": benchmark, "entries": {}}
    results["entries"][name] = entry
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", choices=sorted(ENTRIES), help="entries to run (default: all)")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--reuse-eval", action="store_true",
                   help="take <run_dir>/eval_<episodes>.json when it exists instead of evaluating again")
    p.add_argument("--out", default="benchmarks/results/policies.json")
    args = p.parse_args()
    out = Path(args.out)
    machine = machine_info()
    for name in args.only or list(ENTRIES):
        print(f"== {name}")
        e = {**run_entry(name, args.episodes, args.reuse_eval), "machine": machine}
        save_entry(out, "policies", name, e)
        print(f"   {e['success_rate']:.2f} {e['success_ci95']} after {e['train_steps']} steps, {e['train_wall_s']} s")


if __name__ == "__main__":
    main()
