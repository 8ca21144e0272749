"""Generate the policy regression artifacts that ``tests/test_regression.py`` compares against.

As LeRobot does (``tests/artifacts/policies``): for each policy family and observation kind (diffusion
and ACT, low-dim state and camera image) a small policy is built from a fixed seed with fixed dataset
statistics, and a fixed synthetic batch goes through it. Saved per case, as one safetensors file
(``tests/regression/policies/<case>.safetensors``):

* ``weights.<name>``: the state dict right after construction (so a change to the initialisation,
  e.g. the order modules are created in, is detected on its own);
* ``batch.<key>``: the training batch (``obs.<key>: (B, n_obs_steps, *shape)``, ``action: (B, horizon, A)``);
* ``loss``: ``compute_loss`` of the batch in training mode (random crops, dropout, diffusion noise
  and steps drawn after ``torch.manual_seed(LOSS_SEED)``);
* ``grad.<name>``: the gradient of that loss for every parameter;
* ``action``: ``predict_action`` in eval mode, ``(B, n_action_steps, A)``, with the sampling noise
  seeded (``torch.manual_seed(PREDICT_SEED)`` and, for diffusion, a generator seeded the same);
* ``action_chunk``: the same with ``n_action_steps = horizon - n_obs_steps + 1``: every action predicted
  from the current step on.

Everything runs on the CPU with one torch thread (:data:`THREADS`): the summation order of a
convolution or matrix product depends on the thread count, and ten DDIM steps amplify that to 5e-5.

Also an old-format checkpoint (``tests/regression/checkpoint_v1/``), written by
:func:`robolearn.train.checkpoint.save_checkpoint` as it was when this script was first run, and the
action its policy gives (``checkpoint_v1_action.safetensors``); the checkpoint must keep loading with
:func:`robolearn.train.checkpoint.load_policy` and giving that action.

When to regenerate: never as part of a refactor. A policy change keeps the committed regression
artifacts equal, or updates them in a commit of its own that says why the numbers changed (a fixed
bug, a deliberate change of the model). The checkpoint fixture is never regenerated: it stands for
checkpoints already on disk; a new checkpoint format adds a new fixture beside it.

Run from the repository root::

    .venv/bin/python tests/regression/make_artifacts.py            # policies only
    .venv/bin/python tests/regression/make_artifacts.py --checkpoint  # also (re)write the checkpoint fixture
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
POLICY_DIR = HERE / "policies"
CHECKPOINT_DIR = HERE / "checkpoint_v1"
CHECKPOINT_ACTION = HERE / "checkpoint_v1_action.safetensors"

INIT_SEED, LOSS_SEED, PREDICT_SEED, DATA_SEED = 0, 1, 2, 3
THREADS = 1  # torch CPU threads while generating and comparing (see the module docstring)
BATCH = 3  # samples per batch
ACTION_DIM = 2
STATE = {"pos": (3,)}
IMAGE = {"pos": (3,), "cam_image": (32, 32, 3)}
VISION = {"width": 2, "crop": [28, 28], "num_keypoints": 4, "feature_dim": 8}
DIFFUSION = dict(name="diffusion", horizon=8, n_obs_steps=2, n_action_steps=4, down_dims=[4, 8], kernel_size=3,
                 n_groups=4, step_embed_dim=8, num_train_timesteps=20, num_inference_steps=4,
                 beta_schedule="squaredcos_cap_v2")
ACT = dict(name="act", horizon=6, n_obs_steps=1, n_action_steps=3, dim_model=8, n_heads=2, dim_feedforward=16,
           n_encoder_layers=1, n_decoder_layers=2, n_vae_encoder_layers=1, latent_dim=4, kl_weight=10.0,
           dropout=0.1, temporal_ensemble_k=None)

#: case name -> (policy config as in ``configs/policy/*.yaml``, obs shapes)
CASES: dict[str, tuple[dict[str, Any], dict[str, tuple[int, ...]]]] = {
    "diffusion_state": (DIFFUSION, STATE),
    "diffusion_image": ({**DIFFUSION, "vision": VISION}, IMAGE),
    "act_state": (ACT, STATE),
    "act_image": ({**ACT, "vision": VISION}, IMAGE),
}


def stats() -> dict[str, dict[str, np.ndarray]]:
    """Fixed dataset statistics for ``pos (3,)`` and ``action (2,)`` (every normalizer mode's keys)."""
    return {
        "pos": {"min": np.array([-1.0, -0.5, 0.0]), "max": np.array([1.0, 1.5, 0.2]),
                "mean": np.array([0.1, 0.4, 0.05]), "std": np.array([0.5, 0.6, 0.004])},  # one std under ACT's floor
        "action": {"min": np.array([-2.0, 0.0]), "max": np.array([2.0, 1.0]),
                   "mean": np.array([0.2, 0.5]), "std": np.array([1.1, 0.3])},
    }


def build(case: str):
    """The case's policy, initialised from ``INIT_SEED``, in training mode."""
    from robolearn.policies import build_policy

    cfg, shapes = CASES[case]
    torch.manual_seed(INIT_SEED)
    return build_policy(cfg, shapes, ACTION_DIM, stats=stats()).train()


def make_batch(case: str) -> dict[str, torch.Tensor]:
    """The case's synthetic batch in raw units: ``obs.pos`` around the stats' range, images uint8."""
    cfg, shapes = CASES[case]
    rng = np.random.default_rng(DATA_SEED)
    To, T = cfg["n_obs_steps"], cfg["horizon"]
    batch = {}
    for k, shape in shapes.items():
        if len(shape) == 1:
            batch[f"obs.{k}"] = torch.from_numpy(rng.uniform(-1.0, 1.5, (BATCH, To, *shape)).astype(np.float32))
        else:
            batch[f"obs.{k}"] = torch.from_numpy(rng.integers(0, 256, (BATCH, To, *shape), dtype=np.uint8))
    batch["action"] = torch.from_numpy(rng.uniform(-2.0, 2.0, (BATCH, T, ACTION_DIM)).astype(np.float32))
    return batch


def loss_of(policy, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The scalar training loss, whatever ``compute_loss`` returns around it (the loss or ``(loss, info)``)."""
    out = policy.compute_loss(batch)
    return out[0] if isinstance(out, tuple) else out


def predict(policy, obs: dict[str, torch.Tensor]) -> torch.Tensor:
    """``predict_action`` with the sampling noise seeded by ``PREDICT_SEED`` (the global RNG, and
    the generator argument of a diffusion policy)."""
    torch.manual_seed(PREDICT_SEED)
    if policy.get_config().get("num_inference_steps") is not None:  # a denoising policy takes a generator
        return policy.predict_action(obs, generator=torch.Generator().manual_seed(PREDICT_SEED))
    return policy.predict_action(obs)


def outputs(policy, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``loss``, ``grad.<name>``, ``action`` and ``action_chunk`` of ``policy`` on ``batch`` (see the
    module docstring); ``policy`` is left in eval mode with its original ``n_action_steps``."""
    policy.train()
    policy.zero_grad(set_to_none=True)
    torch.manual_seed(LOSS_SEED)
    loss = loss_of(policy, batch)
    loss.backward()
    out = {"loss": loss.detach().reshape(1)}
    out.update({f"grad.{n}": p.grad.detach().clone() for n, p in policy.named_parameters() if p.grad is not None})
    policy.eval()
    obs = {k[4:]: v for k, v in batch.items() if k.startswith("obs.")}
    out["action"] = predict(policy, obs)
    n = policy.n_action_steps
    policy.n_action_steps = policy.horizon - policy.n_obs_steps + 1
    try:
        out["action_chunk"] = predict(policy, obs)
    finally:
        policy.n_action_steps = n
    return out


def generate_policies() -> list[Path]:
    """Write ``policies/<case>.safetensors`` for every case; returns the paths."""
    from safetensors.torch import save_file

    POLICY_DIR.mkdir(parents=True, exist_ok=True)
    paths = []
    for case in CASES:
        policy = build(case)
        tensors = {f"weights.{k}": v.detach().clone().contiguous() for k, v in policy.state_dict().items()}
        batch = make_batch(case)
        tensors.update({f"batch.{k}": v for k, v in batch.items()})
        tensors.update(outputs(policy, batch))
        path = POLICY_DIR / f"{case}.safetensors"
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
        paths.append(path)
    return paths


#: Config overrides of the checkpoint fixture: a tiny diffusion policy on PushT's low-dim observations.
CHECKPOINT_OVERRIDES = ["task=pusht", "policy=diffusion", "policy.horizon=8", "policy.n_action_steps=4",
                        "policy.down_dims=[4,8]", "policy.kernel_size=3", "policy.n_groups=4",
                        "policy.step_embed_dim=8", "policy.num_train_timesteps=20", "policy.num_inference_steps=4"]
CHECKPOINT_OBS = {"agent_pos": (2,), "keypoints": (16,)}


def checkpoint_obs() -> dict[str, torch.Tensor]:
    """The observation the checkpoint fixture's action is computed on: ``{key: (2, n_obs_steps, D)}``."""
    rng = np.random.default_rng(DATA_SEED)
    return {k: torch.from_numpy(rng.uniform(0.0, 512.0, (2, 2, *s)).astype(np.float32)) for k, s in CHECKPOINT_OBS.items()}


def checkpoint_action(policy) -> torch.Tensor:
    """The fixture policy's ``predict_action`` on :func:`checkpoint_obs`, noise seeded by ``PREDICT_SEED``."""
    return policy.predict_action(checkpoint_obs(), generator=torch.Generator().manual_seed(PREDICT_SEED))


def generate_checkpoint() -> Path:
    """Write the old-format checkpoint fixture and its expected action."""
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    from robolearn.policies import build_policy
    from robolearn.train.checkpoint import save_checkpoint
    from robolearn.utils.config import load_config

    cfg = load_config(CHECKPOINT_OVERRIDES)
    rng = np.random.default_rng(DATA_SEED)
    st = {"agent_pos": {"min": np.zeros(2), "max": np.full(2, 512.0)},
          "keypoints": {"min": np.zeros(16), "max": np.full(16, 512.0)},
          "action": {"min": np.full(2, 10.0), "max": np.full(2, 500.0)}}
    for d in st.values():
        d["mean"] = (d["min"] + d["max"]) / 2 + rng.normal(size=d["min"].shape)
        d["std"] = (d["max"] - d["min"]) / 4
    torch.manual_seed(INIT_SEED)
    policy = build_policy(OmegaConf.to_container(cfg.policy, resolve=True), CHECKPOINT_OBS, 2, stats=st).eval()
    save_checkpoint(CHECKPOINT_DIR, policy, cfg, cfg.policy.name, stats=st)
    save_file({"action": checkpoint_action(policy).contiguous()}, str(CHECKPOINT_ACTION))
    return CHECKPOINT_DIR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", action="store_true", help="also (re)write the old-format checkpoint fixture")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    for path in generate_policies():
        print(f"wrote {path.relative_to(HERE.parent.parent)} ({path.stat().st_size / 1024:.1f} KiB)")
    if args.checkpoint:
        print(f"wrote {generate_checkpoint().relative_to(HERE.parent.parent)}")


if __name__ == "__main__":
    main()
