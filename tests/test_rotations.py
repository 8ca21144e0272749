"""Quaternion helpers agree with scipy's rotations (xyzw); angle wrapping; the gripper conventions."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from robolearn.utils.rotations import quat_multiply, quat_to_rotvec, rotvec_to_quat


def test_helpers_match_scipy():
    rng = np.random.default_rng(0)
    for _ in range(200):
        v = rng.normal(size=3) * rng.choice([1e-9, 0.1, 1.0, 3.0])
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        np.testing.assert_allclose(rotvec_to_quat(v), Rotation.from_rotvec(v).as_quat(), atol=1e-12)
        np.testing.assert_allclose(quat_to_rotvec(q), Rotation.from_quat(q).as_rotvec(), atol=1e-9)
        r = quat_multiply(rotvec_to_quat(v), q)
        expected = (Rotation.from_rotvec(v) * Rotation.from_quat(q)).as_quat()
        assert np.allclose(r, expected, atol=1e-12) or np.allclose(r, -expected, atol=1e-12)


def test_wrap_angle_lands_in_the_half_open_period():
    from robolearn.utils.rotations import wrap_angle

    rng = np.random.default_rng(1)
    for period in (2 * np.pi, np.pi, np.pi / 2):
        for a in rng.uniform(-20, 20, 200):
            w = wrap_angle(a, period)
            assert -period / 2 <= w < period / 2
            assert abs(np.sin(np.pi * (a - w) / period * 2)) < 1e-9  # differs by a whole number of periods
    assert wrap_angle(np.pi) == -np.pi and wrap_angle(-np.pi) == -np.pi
    assert wrap_angle(0.8, np.pi / 2) == pytest.approx(0.8 - np.pi / 2, abs=1e-12)


def test_gripper_command_and_opening_are_inverse_and_clipped():
    from robolearn.envs.actions import GRIPPER_CLOSE, GRIPPER_OPEN, gripper_command, gripper_opening

    assert gripper_opening(GRIPPER_OPEN) == 1.0 and gripper_opening(GRIPPER_CLOSE) == 0.0
    assert gripper_command(1.0) == GRIPPER_OPEN and gripper_command(0.0) == GRIPPER_CLOSE
    for g in np.linspace(-1, 1, 21):
        assert gripper_command(gripper_opening(g)) == pytest.approx(g, abs=1e-12)
    assert gripper_opening(3.0) == 0.0 and gripper_opening(-3.0) == 1.0
    assert gripper_command(1.7) == GRIPPER_OPEN and gripper_command(-0.2) == GRIPPER_CLOSE
