"""The SO-101 pick-and-place task (robolearn/envs/so101_pick.py): seeded resets that reuse the model,
the IK expert placing the cube, the joint-position action convention (clipped to the joint ranges,
bad actions refused), the cameras, `robolearn collect`, and the SO-101 twin showing the same scene."""

import numpy as np
import pytest

from robolearn.envs import TASKS, make_env, make_expert
from robolearn.envs.so101_pick import (ARM_JOINTS, CUBE_HALF, HOME_Q, MIN_SEPARATION, REGION_R, SUCCESS_RADIUS,
                                       So101Ik, So101PickEnv, So101PickExpert)
from robolearn.utils.config import load_config

_no_render = (__import__("robolearn.utils.gl", fromlist=["pick_backend"]).pick_backend() is None
              and not __import__("os").environ.get("ROBOLEARN_REQUIRE_RENDER"))


def run(env, expert, seed, steps=None):
    """One expert episode; returns (objects (T+1, 10), success, length, actions (T, 6))."""
    obs, _ = env.reset(seed=seed)
    expert.reset()
    trace, actions = [obs["object"].copy()], []
    for t in range(steps or env.max_episode_steps):
        actions.append(expert(obs))
        obs, _, term, trunc, info = env.step(actions[-1])
        trace.append(obs["object"].copy())
        if term or trunc:
            break
    return np.array(trace), info["is_success"], t + 1, np.array(actions)


@pytest.fixture(scope="module")
def env():
    e = So101PickEnv()
    yield e
    e.close()


def test_resets_are_seeded_reuse_the_model_and_start_at_home(env):
    model = env.model
    run(env, So101PickExpert(), seed=7, steps=20)  # history before the compared reset
    a, _ = env.reset(seed=3)
    b, _ = So101PickEnv().reset(seed=3)
    assert env.model is model
    assert set(a) == {"joint_pos", "gripper", "eef_pos", "eef_quat", "object"}
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        assert a[k].dtype == np.float32
    np.testing.assert_allclose(a["joint_pos"], HOME_Q, atol=1e-6)
    starts = [env.reset(seed=s)[0]["object"] for s in range(20)]
    assert len({tuple(o[:2]) for o in starts}) == 20 and len({tuple(o[7:9]) for o in starts}) == 20
    pan = env.scene.pan_xy
    for o in starts:
        cube, target = o[:3], o[7:10]
        assert cube[2] == pytest.approx(CUBE_HALF, abs=1e-6) and target[2] == 0.0
        for p in (cube, target):
            assert REGION_R[0] - 1e-6 <= np.linalg.norm(p[:2] - pan) <= REGION_R[1] + 1e-6
        assert np.linalg.norm(cube[:2] - target[:2]) >= MIN_SEPARATION
    # Home: the jaws point straight down (the gripper's z axis up), above the table.
    ik = So101Ik(env.model, "grasp")
    pos, rot = ik.fk(HOME_Q)
    assert rot[2, 2] > 0.999 and 0.08 < pos[2] < 0.2


def test_the_expert_picks_and_places_the_cube(env):
    expert = make_expert("so101_pick")
    for seed in (0, 1, 2):
        trace, success, length, actions = run(env, expert, seed)
        assert success, seed
        assert length < env.max_episode_steps
        cube, target = trace[-1][:3], trace[-1][7:10]
        assert np.linalg.norm(cube[:2] - target[:2]) <= SUCCESS_RADIUS
        assert np.linalg.norm(trace[0][:2] - target[:2]) > SUCCESS_RADIUS  # it really moved the cube there
        assert trace[:, 2].max() > CUBE_HALF + 0.04                       # ... by lifting it
        assert env.action_space.contains(actions.max(0)) and env.action_space.contains(actions.min(0))
    # Deterministic: the same seed gives the same episode.
    again = run(env, expert, 2)
    np.testing.assert_array_equal(again[0], trace)


def test_success_is_the_cube_resting_inside_the_area(env):
    """The cube put down by hand in the area (the arm at home, not touching it) is a success; 4 cm
    off the centre or held up in the air it is not."""
    hold = np.append(HOME_Q, 0.45).astype(np.float32)
    c = env.scene.cube_qadr
    for offset, height, want in (((0.0, 0.0), 0.0, True), ((0.04, 0.0), 0.0, False), ((0.0, 0.0), 0.05, None)):
        obs, _ = env.reset(seed=0)
        target = obs["object"][7:10]
        env.data.qpos[c:c + 3] = [target[0] + offset[0], target[1] + offset[1], CUBE_HALF + height]
        env.data.qvel[:] = 0.0
        info = env.step(hold)[4]
        if want is None:  # falling: not resting
            assert not info["is_success"]
            continue
        for _ in range(5):
            _, reward, term, _, info = env.step(hold)
            if term:
                break
        assert info["is_success"] is want and (reward == 1.0) is want and term is want


def test_actions_are_joint_targets_clipped_to_the_ranges_and_bad_ones_refused(env):
    assert env.action_type == "joint_position" and env.action_space.shape == (6,)
    np.testing.assert_allclose(env.action_space.low[:5], env.scene.joint_range[:, 0], rtol=1e-6)
    np.testing.assert_allclose(env.action_space.high[:5], env.scene.joint_range[:, 1], rtol=1e-6)
    assert (env.action_space.low[5], env.action_space.high[5]) == (0.0, 1.0)
    assert env.action_layout[:5] == tuple(f"{j} rad" for j in ARM_JOINTS)
    beyond = np.array([3.0, -3.0, 2.5, 2.0, 4.0, 1.7])  # every target past its range
    clip = lambda a: np.clip(a, env.action_space.low, env.action_space.high)  # noqa: E731
    other = So101PickEnv()
    env.reset(seed=1)
    other.reset(seed=1)
    for _ in range(3):
        a = env.step(beyond)[0]
        b = other.step(clip(beyond))[0]
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # Pan and roll past their ranges from home: the servos go to the limits (within their sag).
    turn = np.append(HOME_Q + [3.0, 0, 0, 0, -4.0], -0.5)
    env.reset(seed=1)
    for _ in range(30):
        a = env.step(turn)[0]
    np.testing.assert_allclose(a["joint_pos"], clip(turn)[:5], atol=0.03)
    assert a["gripper"][0] < 0.02
    for bad in (np.array([0.0, np.nan, 0, 0, 0, 0]), np.zeros(5), np.full(6, np.inf)):
        with pytest.raises(ValueError, match="6 finite numbers"):
            env.step(bad)
    with pytest.raises(ValueError, match="whole number"):
        So101PickEnv(control_freq=33.0)


def test_the_task_joint_order_is_the_so101_drivers():
    from robolearn.robots.so101_twin import SO101_JOINTS

    assert ARM_JOINTS == SO101_JOINTS


@pytest.mark.skipif(_no_render, reason="no offscreen rendering")
def test_top_and_wrist_cameras_have_the_configured_shape():
    cfg = load_config(["task=so101_pick_image", "task.image_size=[48,64]"]).task
    env = make_env(cfg, render_mode="rgb_array")
    try:
        obs, _ = env.reset(seed=0)
        assert set(obs) >= {"top_image", "wrist_image"} and env.observation_space.contains(obs)
        for k in ("top_image", "wrist_image"):
            assert obs[k].dtype == np.uint8 and obs[k].shape == (48, 64, 3)
            assert obs[k].std() > 5.0, k  # a scene, not a blank frame
        assert env.render().shape == (240, 320, 3)
        # the wrist camera rides on the gripper, the top camera stays
        wrist, top = env.model.camera("wrist").id, env.model.camera("top").id
        before = env.data.cam_xpos.copy()
        for _ in range(5):
            env.step(np.append(HOME_Q + [0.4, 0, 0, 0, 0], 0.45))
        assert np.linalg.norm(env.data.cam_xpos[wrist] - before[wrist]) > 0.03
        np.testing.assert_array_equal(env.data.cam_xpos[top], before[top])
    finally:
        env.close()


@pytest.mark.skipif(_no_render, reason="no offscreen rendering")
def test_collect_writes_the_episodes(tmp_path):
    from robolearn.apps.collect import collect
    from robolearn.data.store import EpisodeStore

    out = tmp_path / "so101.zarr"
    result = collect("so101_pick_image", episodes=2, out=out, overrides=["task.image_size=[32,32]"], progress=False)
    assert result["kept"] == 2 and result["dropped"] == 0
    store = EpisodeStore.open(out)
    assert store.n_episodes == 2
    assert list(store.episode_meta("seed")) == [0, 1] and all(store.episode_meta("success"))
    assert store.attrs["action_space"]["type"] == "joint_position" and store.attrs["robot"] == "so101"
    ep = store.get_episode(1)
    assert ep["top_image"].shape[1:] == (32, 32, 3) and ep["wrist_image"].dtype == np.uint8
    assert ep["action"].shape[1] == 6 and ep["joint_pos"].shape[1] == 5 and ep["object"].shape[1] == 10


def test_the_so101_twin_shows_the_task():
    """The twin of hardware/so101_sim.yaml loads the task's scene: its reset is the environment's
    (same seed, same cube and area), its observation has the environment's keys, and the expert,
    driving it through joint commands at 20 Hz, places the cube (the twin's own success check)."""
    from robolearn.robots.config import load_robot_config, make_robot
    from robolearn.robots.loop import ManualClock
    from robolearn.robots.so101_twin import So101Twin
    from robolearn.robots.types import Command, ControlMode
    from robolearn.utils.errors import ConfigError

    assert TASKS["so101_pick"].twin_robot == "so101"
    cfg = load_robot_config("so101_sim")
    assert cfg["task"] == "so101_pick"
    clock = ManualClock()
    twin = make_robot(cfg, clock=clock)
    assert isinstance(twin, So101Twin)
    env = So101PickEnv()
    twin.connect()
    twin.reset(4)
    obs, want = twin.task_obs(), env.reset(seed=4)[0]
    assert set(obs) == set(want)
    for k in want:
        np.testing.assert_allclose(obs[k], want[k], atol=1e-6, err_msg=k)
    expert = So101PickExpert()
    for _ in range(env.max_episode_steps):
        a = expert(obs)
        twin.send_command(Command(ControlMode.JOINT_POSITION, joint_pos=a[:5], gripper=float(a[5])))
        clock.sleep(env.control_dt)
        obs = twin.task_obs()
        if twin.is_success():
            break
    assert twin.is_success()
    twin.disconnect()
    with pytest.raises(ValueError, match="the SO-101 twin shows the tasks \\['so101_pick'\\]"):
        So101Twin(task="lift")
    from robolearn.robots.config import validate_robot_config

    raw = {k: v for k, v in cfg.items() if not k.startswith("_")} | {"task": "lift"}
    with pytest.raises(ConfigError, match="task: the so101 twin shows one of \\['so101_pick'\\]"):
        validate_robot_config(raw)
