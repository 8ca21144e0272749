"""task=gym_pusht: gym-pusht's PushT behind our task API, its scripted expert and `collect`."""

import numpy as np
import pytest

pytest.importorskip("gym_pusht")

from robolearn.envs import make_env, make_expert  # noqa: E402
from robolearn.envs.gym_pusht import (  # noqa: E402
    GOAL, SHAPE, GymPushTEnv, GymPushTExpert, planner_pose, tee_keypoints,
)
from robolearn.utils.config import load_config  # noqa: E402


def _outline(shape):
    """The T's 8 corners in the planner's block frame, as a set of rounded tuples."""
    bx, by = shape.bar_half
    sx, sy = shape.stem_half[0], shape.stem_centre_y - shape.stem_half[1]
    return np.array([[-bx, by], [-bx, -by], [-sx, -by], [-sx, sy], [sx, sy], [sx, -by], [bx, -by], [bx, by]])


def test_reset_is_seeded_and_obs_have_our_keys_shapes_and_dtypes():
    env = GymPushTEnv()
    a, info = env.reset(seed=100000)
    b, _ = env.reset(seed=100000)
    c, _ = env.reset(seed=100001)
    assert set(a) == {"agent_pos", "keypoints", "object"}
    assert {k: (v.shape, v.dtype) for k, v in a.items()} == {
        "agent_pos": ((2,), np.float32), "keypoints": ((18,), np.float32), "object": ((4,), np.float32)}
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["keypoints"], c["keypoints"])
    assert env.observation_space.contains(a) and info["is_success"] is False and 0.0 <= info["coverage"] < 0.95
    # The keypoints are fixed on the block: 9 points of the T, moved by the block's pose.
    x, y, cos, sin = a["object"]
    kp = a["keypoints"].reshape(9, 2).astype(np.float64)
    local = (kp - [x, y]) @ np.array([[cos, -sin], [sin, cos]])
    np.testing.assert_allclose(local, tee_keypoints(), atol=1e-3)


def test_keypoints_are_nine_spread_points_on_the_tee():
    kp = tee_keypoints()
    assert kp.shape == (9, 2) and len({tuple(p) for p in kp}) == 9
    in_bar = (np.abs(kp[:, 0]) <= 60) & (kp[:, 1] >= 0) & (kp[:, 1] <= 30)
    in_stem = (np.abs(kp[:, 0]) <= 15) & (kp[:, 1] >= 30) & (kp[:, 1] <= 120)
    assert np.all(in_bar | in_stem)
    assert min(np.linalg.norm(p - q) for i, p in enumerate(kp) for q in kp[i + 1:]) > 20  # spread, px


def test_planner_frame_puts_the_planner_tee_on_gym_pushts_tee():
    env = GymPushTEnv()
    env.reset(seed=3)
    corners = env.env.get_keypoints(env.env._block_shapes)  # gym-pusht's own 8 world vertices (px)
    pose = planner_pose(env.block_pose())
    c, s = np.cos(pose[2]), np.sin(pose[2])
    ours = _outline(SHAPE) @ np.array([[c, s], [-s, c]]) + pose[:2]
    assert {tuple(np.round(p, 3)) for p in ours} == {tuple(np.round(p, 3)) for p in corners}


def test_success_and_coverage_come_from_gym_pusht():
    env = GymPushTEnv(max_episode_steps=5)
    env.reset(seed=0)
    inner = env.env
    inner.block.angle, inner.block.position = GOAL[2], (GOAL[0], GOAL[1])  # on the target
    inner.agent.position = (40.0, 40.0)
    obs, reward, terminated, truncated, info = env.step(np.array([40.0, 40.0]))
    assert info["is_success"] and terminated and not truncated and reward == 1.0
    assert info["coverage"] == pytest.approx(inner._get_coverage()) and info["coverage"] > 0.95
    env.reset(seed=0)
    for t in range(5):  # far from the target: no success, truncated at max_episode_steps
        obs, reward, terminated, truncated, info = env.step(obs["agent_pos"].copy())
        assert not info["is_success"] and not terminated and truncated == (t == 4)
    assert reward == info["score"] == pytest.approx(min(info["coverage"] / 0.95, 1.0))
    with pytest.raises(ValueError, match="px"):
        env.step(np.array([np.nan, 1.0]))
    with pytest.raises(ValueError, match="unknown camera"):
        GymPushTEnv(cameras=("top",))


def test_pixels_camera_is_gym_pushts_96px_image():
    env = make_env(load_config(["task=gym_pusht_image"]).task)
    obs, _ = env.reset(seed=1)
    img = obs["pixels_image"]
    assert img.shape == (96, 96, 3) and img.dtype == np.uint8 and env.observation_space.contains(obs)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 3  # background, goal, block, pusher
    env.env.reset(seed=1)
    np.testing.assert_array_equal(img, env.env.get_obs()["pixels"])


def test_expert_solves_held_out_seeds():
    env, expert = GymPushTEnv(), make_expert("gym_pusht")
    assert isinstance(expert, GymPushTExpert)
    from robolearn.envs.push_planner import PlanarPushPlanner
    from robolearn.envs.pusht import PushTExpert

    assert type(expert.planner) is type(PushTExpert().planner) is PlanarPushPlanner  # one planner, two unit systems
    for seed in (100000, 100001, 100002):  # 100001: the block starts near a wall
        obs, _ = env.reset(seed=seed)
        expert.reset(seed=seed)
        for _ in range(300):
            action = expert(obs)
            assert action.dtype == np.float32 and env.action_space.contains(action)
            obs, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break
        assert info["is_success"], seed


@pytest.mark.parametrize("task,image", [("gym_pusht", False), ("gym_pusht_image", True)])
def test_collect_writes_a_store_with_the_tasks_keys_and_units(tmp_path, task, image):
    from robolearn.apps.collect import collect_demos
    from robolearn.data.store import EpisodeStore

    cfg = load_config([f"task={task}"])
    result = collect_demos(cfg.task, tmp_path / "d.zarr", episodes=1 if image else 2, seed_start=5, progress=False)
    assert result["kept"] == result["attempted"]
    store = EpisodeStore.open(tmp_path / "d.zarr")
    keys = {"action", "agent_pos", "keypoints", "object"} | ({"pixels_image"} if image else set())
    assert set(store.keys) == keys
    assert store.attrs["task"] == task and store.attrs["action_space"]["type"] == "pusher_target_position_px"
    assert store.key_info("agent_pos").units == "px" and store.key_info("action").units.startswith("px")
    assert store.key_info("keypoints").shape == (18,)
    ep = store.get_episode(0)
    assert ep["action"].shape[1:] == (2,) and np.all(store.episode_meta("success") == 1)
    if image:
        assert ep["pixels_image"].shape[1:] == (96, 96, 3) and ep["pixels_image"].dtype == np.uint8
        assert store.attrs["cameras"] == {"pixels": {"height": 96, "width": 96}}
