"""robolearn deploy on the SO-101 twin: so101_pick's joint-position action convention through the
HAL's session and safety layer, the twin's rendered cameras (the so101_pick environment's frames),
and deploy of state and image policies on hardware/so101_sim.yaml."""

import multiprocessing
import re
import time
import types

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from robolearn.utils.errors import ConfigError

CAMERAS = ("top", "wrist")  # configs/task/so101_pick_image.yaml
STATE_OBS = {"joint_pos": (5,), "gripper": (1,), "eef_pos": (3,), "object": (10,)}  # configs/task/so101_pick.yaml
IMAGE_OBS = {"joint_pos": (5,), "gripper": (1,), "top_image": (96, 96, 3), "wrist_image": (96, 96, 3)}
TINY = ["policy.down_dims=[16,32]", "policy.horizon=8", "policy.n_action_steps=4", "policy.n_groups=4",
        "policy.step_embed_dim=16", "policy.num_inference_steps=2"]


def tiny_checkpoint(path, task: str, obs_shapes: dict, max_steps: int = 20, overrides=()):
    """A small untrained diffusion policy (state, or image for ``so101_pick_image``) with the task's
    keys, its action statistics those of joint targets near the home pose, saved as a checkpoint."""
    from robolearn.data.normalizer import compute_stats
    from robolearn.policies import build_policy
    from robolearn.train.checkpoint import save_checkpoint
    from robolearn.utils.config import load_config

    image = any(len(s) == 3 for s in obs_shapes.values())
    cfg = load_config([f"task={task}", *(["policy=diffusion_image"] if image else []),
                       f"task.max_episode_steps={max_steps}", *TINY, *overrides])
    rng = np.random.default_rng(0)
    low = {k: s for k, s in obs_shapes.items() if len(s) == 1}
    action = np.concatenate([rng.uniform(-0.3, 0.3, (20, 5)) + [0.0, -0.209, 0.214, 1.566, 0.0],
                             rng.uniform(0, 1, (20, 1))], axis=1)
    stats = compute_stats({**{k: rng.normal(size=(20, *s)) for k, s in low.items()}, "action": action})
    torch.manual_seed(0)
    policy = build_policy(OmegaConf.to_container(cfg.policy, resolve=True), obs_shapes, 6, stats=stats)
    return save_checkpoint(path, policy, cfg, str(cfg.policy.name), stats=stats)


class ExpertPolicy:
    """Stands in for :class:`robolearn.apps.deploy.CheckpointPolicy`: the scripted so101_pick expert
    as the policy (its action for the newest observation, held for 3 steps), so a deployed episode
    can succeed without training."""

    def __init__(self, path, **kwargs):
        self.path = path

    def check(self):
        pass

    def __call__(self):
        from robolearn.envs.so101_pick import So101PickExpert

        expert = So101PickExpert()

        def predict(obs):
            return np.repeat(expert({k: v[-1] for k, v in obs.items()})[None], 3, axis=0)

        predict.reset = expert.reset
        return predict


# ------------------------------------------------------------------ the action convention


def test_so101_pick_actions_become_joint_commands_through_the_safety_layer():
    from robolearn.envs.actions import JointPositionAdapter, task_action_adapter
    from robolearn.robots.config import load_robot_config, make_robot
    from robolearn.robots.loop import ManualClock
    from robolearn.robots.safety import SafetyLayer
    from robolearn.robots.session import goal_command
    from robolearn.robots.types import ControlMode

    adapter = task_action_adapter("so101_pick")
    assert isinstance(adapter, JointPositionAdapter) and adapter.action_dim == 6 and not adapter.interpolate
    twin = make_robot(load_robot_config("so101_sim"), clock=ManualClock())
    twin.connect()
    state = twin.read_state()
    action = np.array([0.1, -0.2, 0.3, 1.5, -0.1, 0.25], np.float32)
    cmd = goal_command(adapter, action, state, now=1.0)
    assert cmd.mode == ControlMode.JOINT_POSITION and cmd.timestamp == 1.0 and cmd.eef_pos is None
    np.testing.assert_allclose(cmd.joint_pos, action[:5], rtol=1e-6)
    assert cmd.gripper == pytest.approx(0.25)
    # the safety layer takes it (the twin's mode), clamps a target past the joint range as eval clips it
    safety = SafetyLayer(twin.limits, twin.capabilities, state)
    far = np.array([9.0, *state.joint_pos[1:], 2.0])
    out = safety.filter(goal_command(adapter, far, state, now=state.receive_time + 10.0), state.receive_time + 10.0)
    assert not safety.faults and out.joint_pos[0] == pytest.approx(twin.limits.joint_upper[0]) and out.gripper == 1.0
    # what the safety layer would refuse (and latch a fault on) is refused before it, with the action named
    with pytest.raises(ValueError, match=r"not finite \(refused, not sent to the robot\): \[.*nan"):
        goal_command(adapter, np.array([0.0, np.nan, 0, 0, 0, 0.5]), state, now=2.0)
    with pytest.raises(ValueError, match=r"must have 6 entries .* got shape \(7,\)"):
        goal_command(adapter, np.zeros(7), state, now=2.0)
    twin.close()


def test_deploy_refuses_a_robot_that_does_not_take_the_tasks_commands():
    from robolearn.apps.deploy import _check_control_mode
    from robolearn.envs.actions import task_action_adapter
    from robolearn.robots.types import Capabilities, ControlMode

    def robot(modes, n_joints):
        return types.SimpleNamespace(capabilities=Capabilities(control_modes=modes),
                                     limits=types.SimpleNamespace(n_joints=n_joints))

    joint = task_action_adapter("so101_pick")
    with pytest.raises(ConfigError, match=r"rig\.yaml: the policy's task 'so101_pick' acts in joint_position "
                                          r"commands, but this robot takes \['eef_pose'\]"):
        _check_control_mode("rig.yaml", robot((ControlMode.EEF_POSE,), 7), joint, "so101_pick")
    with pytest.raises(ConfigError, match=r"gives targets for 5 joints, but this robot has 6"):
        _check_control_mode("rig.yaml", robot((ControlMode.JOINT_POSITION,), 6), joint, "so101_pick")
    _check_control_mode("rig.yaml", robot((ControlMode.JOINT_POSITION,), 5), joint, "so101_pick")
    _check_control_mode("rig.yaml", robot((ControlMode.EEF_POSE,), 7), task_action_adapter("lift"), "lift")


# ------------------------------------------------------------------ deploy of a state policy


def test_deploy_runs_so101_pick_on_the_twin_from_evals_seeds_and_measures_success(tmp_path, monkeypatch):
    """The scripted expert as the deployed policy (through the runner's process, scheduler, joint
    commands, safety layer and the 100 Hz loop) places the cube: success is the task's own check;
    the episode starts from the seed `robolearn eval` would use."""
    import robolearn.apps.deploy as deploy_mod
    from robolearn.eval.rollout import held_out_seeds
    from robolearn.train.checkpoint import read_checkpoint_config

    # one action per chunk executed: a new chunk (the expert's next step) every policy step, as in eval
    ckpt = tiny_checkpoint(tmp_path / "ckpt", "so101_pick", STATE_OBS, max_steps=160, overrides=["policy.n_action_steps=1"])
    monkeypatch.setattr(deploy_mod, "CheckpointPolicy", ExpertPolicy)
    before = set(multiprocessing.active_children())
    out = deploy_mod.deploy(ckpt, robot="so101_sim", episodes=1, realtime=False, progress=False)
    assert [p for p in multiprocessing.active_children() if p not in before] == []
    assert out["task"] == "so101_pick" and out["robot"] == "so101_sim" and out["success_measured"]
    assert out["seeds"] == [held_out_seeds(read_checkpoint_config(ckpt), 1)[0]] * 2
    ep = out["episodes"][0]
    assert ep["success"] and out["success_rate"] == 1.0, ep
    assert ep["refused"] == 0 and ep["faults"] == []
    # about as long as the expert needs in the environment on that seed (slots a stall skips are not counted)
    from robolearn.envs.so101_pick import So101PickEnv, So101PickExpert

    env, expert = So101PickEnv(), So101PickExpert()
    obs, info = env.reset(seed=ep["seed"])
    for n in range(1, 161):
        obs, _, done, _, info = env.step(expert(obs))
        if done:
            break
    assert info["is_success"] and 20 <= ep["length"] <= n + 30, (ep["length"], n)


# ------------------------------------------------------------------ the twin's cameras


def test_so101_twin_frames_equal_the_so101_pick_envs_frames_for_the_same_state():
    """At the reset of a seed and after the arm moved (the env's state loaded into the twin), the
    twin's rendered frames are the environment's image observations, pixel for pixel."""
    from robolearn.envs import make_env
    from robolearn.robots.cameras import STATE_FIELDS, wait_frames
    from robolearn.robots.config import load_robot_config, make_robot
    from robolearn.teleop.cameras import make_cameras
    from robolearn.utils.config import load_config

    task = load_config(["task=so101_pick_image"]).task
    rcfg = load_robot_config("so101_sim")
    for name in CAMERAS:  # the config's sizes are the task's
        assert (rcfg["cameras"][name]["height"], rcfg["cameras"][name]["width"]) == tuple(task.image_size)
    env, twin = make_env(task), make_robot(rcfg)
    cams = make_cameras(rcfg["cameras"], rcfg["_path"], robot=twin, names=list(CAMERAS))

    def frames_after(change):
        t = time.monotonic()
        change()
        return {name: frame for name, (frame, _) in wait_frames(cams, after=t).items()}

    def load_env_state():
        data = twin.camera_state()[1]
        assert data is twin.sim.sim_data  # the stepped state, not the kinematics scratch data
        for f in STATE_FIELDS:
            getattr(data, f)[...] = getattr(env.data, f)
        twin.publish_state()

    try:
        pairs = [(frames_after(lambda: twin.reset(7)), env.reset(seed=7)[0])]
        rng = np.random.default_rng(0)
        for _ in range(4):
            obs = env.step(rng.uniform(env.action_space.low, env.action_space.high))[0]
        pairs.append((frames_after(load_env_state), obs))
        for frames, obs in pairs:
            for name in CAMERAS:
                assert frames[name].dtype == np.uint8 and frames[name].shape == (96, 96, 3)
                np.testing.assert_array_equal(frames[name], obs[f"{name}_image"])
        assert not np.array_equal(pairs[0][0]["wrist"], pairs[1][0]["wrist"])
    finally:
        for cam in cams.values():
            cam.close()
        twin.close()
        env.close()


# ------------------------------------------------------------------ deploy of an image policy


def test_deploy_runs_an_untrained_so101_pick_image_policy_on_the_twin_with_its_cameras(tmp_path):
    """20 policy steps (1 s) of a tiny untrained image policy on hardware/so101_sim.yaml's rendered
    top and wrist cameras: it runs, nothing is refused, and observation ages are reported."""
    from robolearn.apps.deploy import deploy

    ckpt = tiny_checkpoint(tmp_path / "ckpt", "so101_pick_image", IMAGE_OBS, max_steps=20)
    before = set(multiprocessing.active_children())
    out = deploy(ckpt, robot="so101_sim", episodes=1, realtime=False, progress=False)
    assert [p for p in multiprocessing.active_children() if p not in before] == []
    assert out["task"] == "so101_pick_image" and out["success_measured"]
    ep = out["episodes"][0]
    # slots that a loaded machine's stalls skip whole are not counted: no exact length on 2 shared cores
    assert 1 <= ep["length"] <= 20 and ep["refused"] == 0 and ep["faults"] == []
    age = out["obs_age_ms"]
    assert age["chunks"] >= 1 and set(age["per_camera"]) == set(CAMERAS)
    assert 0 < age["p50"] <= age["p99"] <= age["max"]
    assert all(out["cameras"][name]["frames"] >= 2 for name in CAMERAS)


def test_a_camera_at_another_size_than_the_policys_is_named(tmp_path):
    from robolearn.apps.deploy import PolicyStack
    from robolearn.utils.config import load_config
    from robolearn.utils.paths import hardware_dir

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    OmegaConf.save(load_config(["task=so101_pick_image", "policy=diffusion_image"]), ckpt / "config.yaml")
    for name in ("policy.json", "model.safetensors"):
        (ckpt / name).write_text("{}")
    cfg = OmegaConf.to_container(OmegaConf.load(hardware_dir() / "so101_sim.yaml"))
    cfg["cameras"]["wrist"]["width"] = 84
    path = tmp_path / "rig.yaml"
    OmegaConf.save(OmegaConf.create(cfg), path)
    with pytest.raises(ConfigError, match=re.escape(str(path)) + r": cameras\.wrist: 84x96 px \(width x height\), "
                                          r"but the policy was trained on 96x96"):
        PolicyStack(ckpt, str(path))
