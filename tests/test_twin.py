"""The MuJoCo twin: physics advances with the (injected) clock, and absolute pose goals computed from
the eval environment's delta actions reproduce the eval environment's episode."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from robolearn.envs.robosuite_env import RobosuiteEnv
from robolearn.robots.loop import ManualClock
from robolearn.robots.twin import MujocoTwin
from robolearn.robots.types import Command, ControlMode, Robot



@pytest.fixture(scope="module")
def twin():
    clock = ManualClock(100.0)
    tw = MujocoTwin(clock=clock)
    tw.connect()
    yield tw, clock
    tw.close()


def test_twin_is_a_robot_and_steps_with_the_clock(twin):
    tw, clock = twin
    assert isinstance(tw, Robot)
    tw.reset(seed=1)
    s0 = tw.read_state()
    assert tw.sim.n_steps == 0
    clock.t += 0.0101  # five 2 ms physics steps are due
    s1 = tw.read_state()
    assert tw.sim.n_steps == 5 and s1.seq == s0.seq + 1
    assert s1.capture_time == pytest.approx(s0.capture_time + 0.010)
    assert s1.receive_time == clock.t
    assert s1.joint_pos.shape == (7,) and np.all(s1.joint_pos >= tw.limits.joint_lower)
    assert np.linalg.norm(s1.eef_quat) == pytest.approx(1.0)
    # A long stall is not replayed in one call: at most max_catch_up_s is simulated, the rest is lag.
    clock.t += 1.0
    tw.read_state()
    assert tw.sim.n_steps == 5 + 25 and tw.lag_s == pytest.approx(0.95, abs=0.003)


def test_twin_refuses_joint_commands_and_calls_before_connect():
    clock = ManualClock(100.0)
    tw = MujocoTwin(clock=clock)
    with pytest.raises(ConnectionError, match=r"not connected; call connect\(\) first"):
        tw.read_state()
    tw.connect()
    with pytest.raises(ValueError, match="EEF_POSE"):
        tw.send_command(Command(ControlMode.JOINT_POSITION, joint_pos=np.zeros(7)))
    tw.close()


def test_twin_replays_eval_episode_from_delta_actions(twin):
    tw, clock = twin
    env = RobosuiteEnv()
    env.reset(seed=5)
    tw.reset(seed=5)
    rng = np.random.default_rng(0)
    for _ in range(12):
        a = rng.uniform(-1, 1, 7) * np.array([0.03] * 3 + [0.2] * 3 + [1.0])
        s = tw.read_state()
        quat = (Rotation.from_rotvec(a[3:6]) * Rotation.from_quat(s.eef_quat)).as_quat()
        tw.send_command(Command(ControlMode.EEF_POSE, eef_pos=s.eef_pos + a[:3], eef_quat=quat, gripper=(1 - a[6]) / 2))
        clock.t += 0.05
        obs, *_ = env.step(a)
    twin_obs = tw.task_obs()
    for k in obs:
        np.testing.assert_allclose(twin_obs[k], obs[k], atol=1e-5, err_msg=k)
    env.close()


def test_the_twin_declares_the_simulated_robot_protocol(twin):
    from robolearn.robots.types import Robot, SimulatedRobot

    tw, _ = twin
    assert isinstance(tw, Robot) and isinstance(tw, SimulatedRobot)
