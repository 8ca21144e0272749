import numpy as np
import pytest

from robolearn.envs import make_env, make_expert
from robolearn.utils.config import load_config


@pytest.fixture(scope="module")
def lift():
    env = make_env(load_config().task)
    yield env
    env.close()


def test_spaces_and_units(lift):
    obs, info = lift.reset(seed=0)
    assert set(obs) == {"robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object"}
    assert obs["object"].shape == (10,) and obs["robot0_eef_pos"].dtype == np.float32
    assert info == {"is_success": False}
    assert lift.action_space.shape == (7,)
    np.testing.assert_allclose(lift.action_space.high, [0.05] * 3 + [0.5] * 3 + [1.0])
    assert lift.observation_space.contains(obs)


def test_seeded_reset_is_deterministic_and_reuses_the_model(lift):
    model = lift.unwrapped_robosuite.sim.model
    a, _ = lift.reset(seed=5)
    for _ in range(3):
        lift.step(np.zeros(7))
    b, _ = lift.reset(seed=5)
    c, _ = lift.reset(seed=6)
    np.testing.assert_array_equal(a["object"], b["object"])
    assert not np.allclose(a["object"][:3], c["object"][:3])
    assert lift.unwrapped_robosuite.sim.model is model  # no XML reload on reset


def test_separately_built_envs_replay_the_same_episode(lift):
    other = make_env(load_config().task)  # a second model build, as in another process or eval worker
    try:
        for env in (lift, other):
            env.reset(seed=11)
        expert_a, expert_b = make_expert("lift"), make_expert("lift")
        obs_a, _ = lift.reset(seed=11)
        obs_b, _ = other.reset(seed=11)
        for _ in range(20):
            obs_a, *_ = lift.step(expert_a(obs_a))
            obs_b, *_ = other.step(expert_b(obs_b))
        for k in obs_a:
            np.testing.assert_array_equal(obs_a[k], obs_b[k])
    finally:
        other.close()


def test_action_is_a_goal_offset_in_metres(lift):
    def climb(offset):
        obs, _ = lift.reset(seed=1)
        start = obs["robot0_eef_pos"].copy()
        for _ in range(10):
            obs, *_ = lift.step(np.array([0.0, 0.0, offset, 0, 0, 0, -1]))
        return obs["robot0_eef_pos"] - start

    small, large = climb(0.01), climb(0.03)
    # The goal is 1 cm (3 cm) above the achieved pose each step: the arm climbs, straight up,
    # never more than the offsets summed, and further for the larger offset.
    assert 0.01 < small[2] < 0.1 and 2 * small[2] < large[2] < 0.3
    assert np.abs(small[:2]).max() < 0.01
    with pytest.raises(ValueError, match="shape"):
        lift.step(np.zeros(6))
    with pytest.raises(ValueError, match="finite"):
        lift.step(np.array([np.nan] * 7))


def run_expert(env, expert, seed):
    """One scripted episode: ``(is_success, terminated, last reward)``."""
    obs, _ = env.reset(seed=seed)
    expert.reset()
    for _ in range(env.max_episode_steps):
        obs, reward, terminated, truncated, info = env.step(expert(obs))
        if terminated or truncated:
            break
    return info["is_success"], terminated, reward


def test_scripted_expert_succeeds_and_reports_success(lift):
    expert = make_expert("lift")
    assert [run_expert(lift, expert, seed) for seed in range(5)] == [(True, True, 1.0)] * 5


def test_unknown_task():
    with pytest.raises(ValueError, match="unknown task"):
        make_env({"name": "nope"})


@pytest.mark.parametrize("task", ["can", "square"])
def test_can_and_square_experts_succeed(task):
    from robolearn.utils.config import load_config

    env = make_env(load_config([f"task={task}"]).task)
    assert env.observation_space["object"].shape == (14,)
    expert = make_expert(task)
    assert [run_expert(env, expert, seed) for seed in range(2)] == [(True, True, 1.0)] * 2
    env.close()


def test_expert_constants_match_robosuite():
    from robolearn.envs.experts import CAN_TARGET, SQUARE_PEG, SQUARE_PEG_TOP
    from robolearn.envs.robosuite_env import RobosuiteEnv

    can = RobosuiteEnv("can").unwrapped_robosuite
    np.testing.assert_allclose(CAN_TARGET, can.target_bin_placements[can.object_to_id["can"]])
    square = RobosuiteEnv("square")
    rs = square.unwrapped_robosuite
    peg = rs.sim.model.body_name2id("peg1")
    np.testing.assert_allclose(SQUARE_PEG, rs.sim.data.body_xpos[peg], atol=1e-9)
    geoms = [g for g in range(square.model.ngeom) if square.model.geom_bodyid[g] == peg]
    top = max(square.data.geom_xpos[g][2] + square.model.geom_size[g][2] for g in geoms)
    assert top == pytest.approx(SQUARE_PEG_TOP, abs=1e-6)


# One camera per task (robosuite's scenes and ours name them differently); lift_image has its own two.
_CAMERA = {"lift": "agentview", "can": "agentview", "square": "agentview", "pusht": "top", "insertion": "front",
           "lift_image": None, "so101_pick": "wrist", "so101_pick_image": None}


@pytest.mark.skipif(__import__("robolearn.utils.gl", fromlist=["pick_backend"]).pick_backend() is None
                    and not __import__("os").environ.get("ROBOLEARN_REQUIRE_RENDER"), reason="no offscreen rendering")
@pytest.mark.parametrize("task", sorted(_CAMERA))
def test_every_task_declares_the_space_of_what_it_returns(task):
    """Vector envs size their buffers from the declared space: image keys must be ``uint8 (H, W, 3)``
    in [0, 255] (not float32), low-dim keys float32, and a reset's observation must fit the space."""
    overrides = [f"task={task}"] + ([f"task.cameras=[{_CAMERA[task]}]"] if _CAMERA[task] else [])
    env = make_env(load_config(overrides).task)
    try:
        obs, _ = env.reset(seed=0)
        assert set(env.observation_space.spaces) == set(obs)
        assert any(k.endswith("_image") for k in obs)
        for k, space in env.observation_space.spaces.items():
            if k.endswith("_image"):
                assert space.dtype == np.uint8 and space.shape == obs[k].shape and space.shape[-1] == 3, k
                assert space.low.min() == 0 and space.high.max() == 255, k
            else:
                assert space.dtype == np.float32, k
        assert env.observation_space.contains(obs)
    finally:
        env.close()


def test_registries_name_what_they_know_and_stay_lazy():
    """Tasks, experts and drivers come from registries; an unknown name lists the known ones; importing
    the task registry does not import robosuite."""
    import subprocess
    import sys

    from robolearn.envs import TASKS
    from robolearn.robots.config import DRIVERS, make_robot
    from robolearn.utils.errors import ConfigError

    with pytest.raises(ValueError, match=r"unknown task 'nope'.*'insertion'"):
        make_env({"name": "nope"})
    with pytest.raises(ValueError, match=r"no scripted expert for task 'nope'.*'pusht'"):
        make_expert("nope")
    with pytest.raises(ConfigError, match=r"unknown driver 'nope'.*'feetech'"):
        make_robot({"driver": "nope", "limits": {}})
    assert set(TASKS) == {"lift", "can", "square", "insertion", "pusht", "gym_pusht", "so101_pick"}
    assert {"mujoco_twin", "mujoco_twin_socket", "ur_rtde", "feetech"} <= set(DRIVERS)
    code = "import sys, robolearn.envs, robolearn.robots.config; print('robosuite' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_phase_expert_counts_steps_and_draws_noise_only_in_noisy_phases():
    """The shared expert machinery: ``waited`` counts from ``enter``; position steps are clipped per
    axis; noise is drawn only in a noisy phase with ``noise_std > 0``, so a noise-free expert is
    unaffected by its seed and a noisy one repeats for the same seed."""
    from robolearn.envs.experts import PhaseExpert

    class Toy(PhaseExpert):
        noisy_phases = ("move",)
        max_step = 0.01

    e = Toy(gain=1.0)
    assert (e.phase, e.count) == ("approach", 0)
    e.enter("hold")
    assert [e.waited(3) for _ in range(4)] == [False, False, True, True]
    e.enter("move")
    assert e.count == 0
    np.testing.assert_array_equal(e.position_step(np.array([1.0, -0.005, 0.0]), np.zeros(3)), [0.01, -0.005, 0.0])
    noisy = [Toy(noise_std=0.1, seed=3) for _ in range(2)]
    steps = []
    for n in noisy:
        n.enter("move")
        steps.append(n.position_step(np.zeros(3), np.zeros(3)))
    np.testing.assert_array_equal(steps[0], steps[1])
    assert np.any(steps[0] != 0) and np.all(np.abs(steps[0]) <= 0.01)
    quiet = Toy(noise_std=0.1, seed=3)
    quiet.enter("hold")  # not a noisy phase: no draw, the generator is untouched
    np.testing.assert_array_equal(quiet.position_step(np.zeros(3), np.zeros(3)), np.zeros(3))
    assert quiet.rng.bit_generator.state == np.random.default_rng(3).bit_generator.state
