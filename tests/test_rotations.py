"""Quaternion helpers agree with scipy's rotations (xyzw)."""

import numpy as np
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
