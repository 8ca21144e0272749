"""Safety layer: for ANY command stream (NaN, Inf, huge values, wrong shapes, mode switches), what
reaches the driver stays inside the limits and moves no faster than they allow."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robolearn.robots.safety import SafetyLayer
from robolearn.utils.rotations import quat_angle as _quat_angle
from robolearn.robots.types import Capabilities, Command, ControlMode, FaultKind, RobotLimits, RobotState

LIMITS = RobotLimits(
    joint_lower=np.array([-1.0, -2.0, -0.5]), joint_upper=np.array([1.0, 2.0, 0.5]),
    joint_vel_max=np.array([1.0, 2.0, 0.5]),
    workspace_lower=np.array([-0.5, -0.5, 0.0]), workspace_upper=np.array([0.5, 0.5, 0.8]),
    eef_speed_max=0.25, eef_rot_speed_max=1.0, gripper_speed_max=2.0,
)
CAPS = Capabilities(control_modes=(ControlMode.JOINT_POSITION, ControlMode.EEF_POSE), has_gripper=True)


def state(q=(0.0, 0.0, 0.0), pos=(0.1, 0.0, 0.4), quat=(0.0, 0.0, 0.0, 1.0), t=0.0, gripper=0.5):
    return RobotState(np.array(q, float), np.zeros(3), np.array(pos, float), np.array(quat, float), gripper, t, t, 0)


# Mostly finite values (so streams run long enough to reach the limits), with NaN/Inf and huge ones mixed in.
finite = st.floats(-3, 3)
wild = st.one_of(finite, finite, finite, finite, st.floats(-1e12, 1e12), st.floats(-1e12, 1e12),
                 st.floats(allow_nan=True, allow_infinity=True))


@st.composite
def commands(draw):
    mode = draw(st.sampled_from(list(ControlMode)))
    gripper = draw(st.one_of(st.none(), wild))
    if mode == ControlMode.JOINT_POSITION:
        n = draw(st.sampled_from([3, 3, 3, 2]))
        return Command(mode, joint_pos=np.array(draw(st.lists(wild, min_size=n, max_size=n))), gripper=gripper)
    return Command(mode, eef_pos=np.array(draw(st.lists(wild, min_size=3, max_size=3))),
                   eef_quat=np.array(draw(st.lists(wild, min_size=4, max_size=4))), gripper=gripper)


def check_within_limits(cmd: Command):
    if cmd.mode == ControlMode.JOINT_POSITION:
        assert np.all(np.isfinite(cmd.joint_pos))
        assert np.all(cmd.joint_pos >= LIMITS.joint_lower) and np.all(cmd.joint_pos <= LIMITS.joint_upper)
    else:
        assert np.all(np.isfinite(cmd.eef_pos)) and np.all(np.isfinite(cmd.eef_quat))
        assert np.all(cmd.eef_pos >= LIMITS.workspace_lower - 1e-12) and np.all(cmd.eef_pos <= LIMITS.workspace_upper + 1e-12)
        assert abs(np.linalg.norm(cmd.eef_quat) - 1) < 1e-6
    if cmd.gripper is not None:
        assert 0.0 <= cmd.gripper <= 1.0


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.lists(st.tuples(commands(), st.floats(0.0, 0.5)), min_size=1, max_size=40),
       st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)))
def test_any_command_stream_stays_within_limits_and_continuous(stream, start):
    q0 = LIMITS.joint_lower + np.array(start) * (LIMITS.joint_upper - LIMITS.joint_lower)
    p0 = LIMITS.workspace_lower + np.array(start) * (LIMITS.workspace_upper - LIMITS.workspace_lower)
    layer = SafetyLayer(LIMITS, CAPS, state(q=q0, pos=p0), watchdog_timeout=100.0)
    now, prev = 0.0, None
    for cmd, dt in stream:
        now += dt
        out = layer.filter(cmd, now)
        check_within_limits(out)
        if prev is not None and out.mode == prev.mode and out is not prev:
            if out.mode == ControlMode.JOINT_POSITION:
                assert np.all(np.abs(out.joint_pos - prev.joint_pos) <= LIMITS.joint_vel_max * dt + 1e-9)
            else:
                assert np.linalg.norm(out.eef_pos - prev.eef_pos) <= LIMITS.eef_speed_max * dt + 1e-9
                assert _quat_angle(out.eef_quat, prev.eef_quat) <= LIMITS.eef_rot_speed_max * dt + 1e-6
            if out.gripper is not None and prev.gripper is not None:
                assert abs(out.gripper - prev.gripper) <= LIMITS.gripper_speed_max * dt + 1e-9
        prev = out


def test_nan_is_refused_latched_and_held_until_cleared():
    layer = SafetyLayer(LIMITS, CAPS, state(q=(0.2, 0.0, 0.0)))
    ok = layer.filter(Command(ControlMode.JOINT_POSITION, joint_pos=np.array([0.25, 0.0, 0.0])), 0.1)
    assert ok.joint_pos[0] == pytest.approx(0.25)
    bad = layer.filter(Command(ControlMode.JOINT_POSITION, joint_pos=np.array([np.nan, 0.0, 0.0])), 0.11)
    np.testing.assert_array_equal(bad.joint_pos, ok.joint_pos)  # holds the last safe target
    assert [f.kind for f in layer.faults] == [FaultKind.INVALID_COMMAND] and "not finite" in layer.faults[0].message
    later = layer.filter(Command(ControlMode.JOINT_POSITION, joint_pos=np.array([0.5, 0.0, 0.0])), 0.2)
    np.testing.assert_array_equal(later.joint_pos, ok.joint_pos)  # latched: still holding
    layer.clear_faults(state(q=(0.25, 0.0, 0.0), t=0.3))
    moved = layer.filter(Command(ControlMode.JOINT_POSITION, joint_pos=np.array([0.5, 0.0, 0.0])), 0.4)
    assert moved.joint_pos[0] == pytest.approx(0.35)  # 1 rad/s for 0.1 s from 0.25
    assert layer.faults == ()


def test_clamps_to_joint_limits_and_step():
    layer = SafetyLayer(LIMITS, CAPS, state())
    out = layer.filter(Command(ControlMode.JOINT_POSITION, joint_pos=np.array([5.0, -5.0, 0.1])), 0.1)
    np.testing.assert_allclose(out.joint_pos, [0.1, -0.2, 0.05])
    for i in range(2, 40):
        out = layer.filter(Command(ControlMode.JOINT_POSITION, joint_pos=np.array([5.0, -5.0, 0.1])), 0.1 * i)
    np.testing.assert_allclose(out.joint_pos, [1.0, -2.0, 0.1])


def test_pose_clamped_to_workspace_and_rotation_slerped():
    layer = SafetyLayer(LIMITS, CAPS, state(pos=(0.1, 0.0, 0.4)))
    target_quat = np.array([0.0, 0.0, np.sin(np.pi / 4), np.cos(np.pi / 4)])  # 90 degrees about z
    out = layer.filter(Command(ControlMode.EEF_POSE, eef_pos=np.array([0.1, 0.0, 5.0]), eef_quat=target_quat), 0.1)
    np.testing.assert_allclose(out.eef_pos, [0.1, 0.0, 0.425])  # 0.25 m/s for 0.1 s
    assert _quat_angle(out.eef_quat, np.array([0, 0, 0, 1.0])) == pytest.approx(0.1, abs=1e-6)
    for i in range(2, 60):
        out = layer.filter(Command(ControlMode.EEF_POSE, eef_pos=np.array([0.1, 0.0, 5.0]), eef_quat=target_quat), 0.1 * i)
    np.testing.assert_allclose(out.eef_pos, [0.1, 0.0, 0.8])  # workspace ceiling
    assert _quat_angle(out.eef_quat, target_quat) < 1e-6


def test_mode_switch_counts_from_the_measured_state():
    layer = SafetyLayer(LIMITS, CAPS, state(pos=(0.1, 0.0, 0.4)))
    layer.filter(Command(ControlMode.JOINT_POSITION, joint_pos=np.array([0.05, 0.0, 0.0])), 0.1)
    layer.observe(state(q=(0.05, 0, 0), pos=(0.3, 0.0, 0.4), t=0.1))  # the robot moved under joint control
    out = layer.filter(Command(ControlMode.EEF_POSE, eef_pos=np.array([0.3, 0.0, 0.4]),
                               eef_quat=np.array([0, 0, 0, 1.0])), 0.11)
    np.testing.assert_allclose(out.eef_pos, [0.3, 0.0, 0.4])  # no jump back toward the stale pose


def test_watchdog_holds_and_latches():
    layer = SafetyLayer(LIMITS, CAPS, state(), watchdog_timeout=0.05)
    sent = layer.filter(Command(ControlMode.JOINT_POSITION, joint_pos=np.array([0.02, 0.0, 0.0])), 0.01)
    assert layer.tick(0.05) is None
    hold = layer.tick(0.07)
    assert hold is not None and [f.kind for f in layer.faults] == [FaultKind.WATCHDOG]
    np.testing.assert_array_equal(hold.joint_pos, sent.joint_pos)


def test_estop_refuses_everything():
    layer = SafetyLayer(LIMITS, CAPS, state())
    hold = layer.estop(0.0)
    out = layer.filter(Command(ControlMode.JOINT_POSITION, joint_pos=np.array([0.5, 0.0, 0.0])), 0.5)
    np.testing.assert_array_equal(out.joint_pos, hold.joint_pos)
    assert layer.faults[0].kind == FaultKind.ESTOP and layer.n_refused == 1


def test_unsupported_mode_and_bad_limits():
    layer = SafetyLayer(LIMITS, Capabilities(control_modes=(ControlMode.JOINT_POSITION,)), state())
    layer.filter(Command(ControlMode.EEF_POSE, eef_pos=np.zeros(3), eef_quat=np.array([0, 0, 0, 1.0])), 0.1)
    assert "not supported" in layer.faults[0].message
    with pytest.raises(ValueError, match="joint_vel_max"):
        RobotLimits(np.zeros(1), np.ones(1), np.zeros(1), np.zeros(3), np.ones(3), 1.0, 1.0)
    with pytest.raises(ValueError, match="workspace_lower must be below"):
        RobotLimits(np.zeros(1), np.ones(1), np.ones(1), np.ones(3), np.zeros(3), 1.0, 1.0)
    with pytest.raises(ValueError, match="eef_speed_max"):
        RobotLimits(np.zeros(1), np.ones(1), np.ones(1), np.zeros(3), np.ones(3), float("nan"), 1.0)
    with pytest.raises(ValueError, match="watchdog_timeout"):
        SafetyLayer(LIMITS, CAPS, state(), watchdog_timeout=0)


def test_pose_only_robot_holds_a_pose():
    """A robot that takes only pose targets gets a pose as its hold target (watchdog, e-stop)."""
    caps = Capabilities(control_modes=(ControlMode.EEF_POSE,), has_gripper=True)
    layer = SafetyLayer(LIMITS, caps, state(pos=(0.1, 0.2, 0.3)), watchdog_timeout=0.01)
    hold = layer.tick(1.0)
    assert hold.mode == ControlMode.EEF_POSE
    np.testing.assert_allclose(hold.eef_pos, [0.1, 0.2, 0.3])
    assert layer.faults[0].kind == FaultKind.WATCHDOG
    assert layer.estop(1.1).mode == ControlMode.EEF_POSE


def test_first_command_after_a_silent_spell_moves_one_period_only():
    """Holding through silent periods advances the step limit's clock: no catch-up jump afterwards."""
    layer = SafetyLayer(LIMITS, CAPS, state(pos=(0.1, 0.0, 0.4)), watchdog_timeout=10.0)
    for k in range(1, 51):
        layer.hold(k * 0.002)
    out = layer.filter(Command(ControlMode.EEF_POSE, eef_pos=np.array([0.4, 0.0, 0.4]),
                               eef_quat=np.array([0.0, 0.0, 0.0, 1.0])), 0.102)
    assert np.linalg.norm(out.eef_pos - [0.1, 0.0, 0.4]) == pytest.approx(LIMITS.eef_speed_max * 0.002)
