"""PushT: coverage metric, seeded resets, contact physics and the scripted expert."""

import numpy as np
import pytest

from robolearn.envs.pusht import GOAL, PushTEnv, PushTExpert, coverage, tee_grid, tee_outline, tee_sdf, to_world


def test_tee_area_and_coverage_metric():
    assert len(tee_grid()) * 0.0025 ** 2 == pytest.approx(0.12 * 0.03 + 0.03 * 0.09)
    assert coverage(GOAL) == pytest.approx(1.0)
    # Shifted by d along the block's own x axis, the T loses d x (bar end + stem side) = d x 0.12 m.
    for d in (0.001, 0.004, 0.01):
        shifted = (GOAL[0] + d * np.cos(GOAL[2]), GOAL[1] + d * np.sin(GOAL[2]), GOAL[2])
        assert coverage(shifted) == pytest.approx(1 - d * 0.12 / 0.0063, abs=1e-9)
    assert coverage((GOAL[0], GOAL[1], GOAL[2] + 0.1)) < 0.95  # 6 degrees off: not yet
    assert coverage((GOAL[0], GOAL[1], GOAL[2] + np.pi)) == pytest.approx(0.0036 / 0.0063)  # only the bars overlap
    assert coverage((1.0, 1.0, 0.0)) == 0.0


def test_outline_and_grid_agree_on_the_area():
    import shapely

    assert shapely.Polygon(tee_outline()).area == pytest.approx(0.0063)


def test_tee_signed_distance():
    d = tee_sdf(np.array([[0.0, 0.0], [0.0, 0.025], [0.07, 0.0], [0.0, -0.11]]))
    np.testing.assert_allclose(d, [-0.015, 0.01, 0.01, 0.005], atol=1e-9)


def test_reset_is_seeded_and_never_starts_solved():
    env = PushTEnv()
    a, info = env.reset(seed=7)
    b, _ = env.reset(seed=7)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert info["coverage"] < 0.5
    for seed in range(20):
        obs, info = env.reset(seed=seed)
        assert info["coverage"] < 0.5 and np.all(np.abs(obs["agent_pos"]) <= 0.2)
        assert env.observation_space.contains(obs)
        x, y, c, s = obs["object"]
        assert c * c + s * s == pytest.approx(1.0, abs=1e-6)
        corners = obs["keypoints"].reshape(8, 2)  # the T's corners where the pose puts them
        np.testing.assert_allclose(corners, to_world(tee_outline(), env.block_pose()), atol=1e-6)
        assert np.linalg.norm(corners.mean(0) - [x, y]) < 0.06
    with pytest.raises(ValueError, match="pusher target"):
        env.step(np.array([np.nan, 0.0]))


def test_pusher_pushes_the_block_flat_on_the_table():
    env = PushTEnv()
    env.reset(seed=0)
    env.data.qpos[env._tee] = [0.0, 0.0, 0.0]
    env.data.qpos[env._pusher] = [0.0, 0.05]  # above the bar (+y side)
    env.data.ctrl[:] = [0.0, 0.05]
    for _ in range(5):
        env.step(np.array([0.0, -0.02]))  # drive through the bar
    x, y, yaw = env.block_pose()
    assert y < -0.01 and abs(x) < 0.003 and abs(yaw) < 0.05  # pushed straight along -y
    assert env.data.qpos[env._tee_z] == pytest.approx(0.0, abs=5e-4)  # still resting on the table
    assert env.pusher_pos()[1] > y + 0.015 + 0.015 - 0.002  # the pusher did not pass through


def test_expert_solves_seeded_episodes():
    env, expert = PushTEnv(), PushTExpert()
    solved = 0
    for seed in range(6):
        obs, _ = env.reset(seed=seed)
        expert.reset()
        for _ in range(300):
            obs, _, terminated, truncated, info = env.step(expert(obs))
            if terminated or truncated:
                break
        solved += info["is_success"]
    assert solved >= 5


def test_expert_routes_to_contacts_without_touching_the_block():
    env, expert = PushTEnv(), PushTExpert()
    moved_while_routing = []
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        expert.reset()
        pushed = False
        for _ in range(300):
            before = env.block_pose()
            obs, _, terminated, truncated, _ = env.step(expert(obs))
            if not expert.pushing and not pushed:  # (the step after a push: the block still slides)
                moved_while_routing.append(np.abs(env.block_pose() - before).max())
            pushed = expert.pushing
            if terminated or truncated:
                break
    assert len(moved_while_routing) > 50 and max(moved_while_routing) < 2e-3
