"""robolearn deploy: the policy stack's life cycle around a robot."""

import multiprocessing

import numpy as np
import pytest
import torch

from robolearn.data.normalizer import compute_stats
from robolearn.policies import build_policy
from robolearn.train.checkpoint import save_checkpoint
from robolearn.utils.config import load_config

LIFT_OBS = {"robot0_eef_pos": (3,), "robot0_eef_quat": (4,), "robot0_gripper_qpos": (2,), "object": (10,)}


def tiny_lift_checkpoint(path):
    """A small untrained diffusion policy with the Lift task's keys, saved as a checkpoint."""
    cfg = load_config(["policy.down_dims=[16,32]", "policy.horizon=8", "policy.n_action_steps=4",
                       "policy.n_groups=4", "policy.step_embed_dim=16", "policy.num_inference_steps=2"])
    rng = np.random.default_rng(0)
    stats = compute_stats({**{k: rng.normal(size=(20, *s)) for k, s in LIFT_OBS.items()},
                           "action": rng.uniform(-0.05, 0.05, size=(20, 7))})
    torch.manual_seed(0)
    policy_cfg = {k: v for k, v in dict(cfg.policy).items()}
    policy = build_policy(policy_cfg, LIFT_OBS, 7, stats=stats)
    return save_checkpoint(path, policy, cfg, "diffusion", stats=stats)


def test_a_robot_that_fails_to_connect_leaves_no_policy_process(tmp_path, monkeypatch):
    import robolearn.apps.deploy as deploy_mod

    real_make_robot = deploy_mod.make_robot
    made = []

    def unreachable_robot(rcfg, **kw):
        robot = real_make_robot(rcfg, **kw)

        def connect():
            raise ConnectionError("robot at 192.0.2.1 did not answer")

        robot.connect = connect
        made.append(robot)
        return robot

    monkeypatch.setattr(deploy_mod, "make_robot", unreachable_robot)
    ckpt = tiny_lift_checkpoint(tmp_path / "ckpt")
    before = set(multiprocessing.active_children())
    with pytest.raises(ConnectionError, match="did not answer"):
        deploy_mod.deploy(ckpt, robot="sim", episodes=1, realtime=False, progress=False)
    assert made, "the robot was built"
    leaked = [p for p in multiprocessing.active_children() if p not in before]
    assert leaked == [], f"policy process left running: {leaked}"
