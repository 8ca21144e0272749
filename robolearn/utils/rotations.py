"""Quaternion and angle helpers (unit quaternions in xyzw order, angles in rad)."""

from __future__ import annotations

import numpy as np


def wrap_angle(a: float, period: float = 2 * np.pi) -> float:
    """Wrap the angle ``a`` (rad) into ``[-period/2, period/2)``; a ``period`` below ``2 pi`` wraps the
    error to a symmetric object's nearest equivalent orientation (``pi / 2`` for a square)."""
    return float((a + period / 2) % period - period / 2)


def quat_normalize(q: np.ndarray) -> np.ndarray:
    """``q / |q|`` for a quaternion ``(4,)``."""
    q = np.asarray(q, dtype=np.float64)
    return q / np.linalg.norm(q)


def quat_angle(a: np.ndarray, b: np.ndarray) -> float:
    """Rotation angle (rad, in ``[0, pi]``) between two unit quaternions ``(4,)``."""
    return 2.0 * float(np.arccos(min(1.0, abs(float(np.dot(a, b))))))


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical linear interpolation between quaternions ``(4,)`` along the short arc (Shoemake,
    SIGGRAPH 1985); ``t = 0`` gives ``a``, ``t = 1`` gives ``b``. Inputs need not be normalized."""
    a, b = quat_normalize(a), quat_normalize(b)
    d = float(np.dot(a, b))
    if d < 0:
        b, d = -b, -d
    if d > 1 - 1e-9:
        return quat_normalize(a + t * (b - a))
    theta = np.arccos(d)
    return (np.sin((1 - t) * theta) * a + np.sin(t * theta) * b) / np.sin(theta)


def quat_xyzw_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrix ``(3, 3)`` of a quaternion ``(4,)`` in xyzw order."""
    x, y, z, w = quat_normalize(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def quat_to_rotvec(q: np.ndarray) -> np.ndarray:
    """Axis-angle vector ``(3,)`` (rad, angle in ``[0, pi]``) of a quaternion ``(4,)`` xyzw."""
    q = quat_normalize(q)
    if q[3] < 0:
        q = -q
    s = float(np.linalg.norm(q[:3]))
    if s < 1e-12:
        return 2.0 * q[:3]
    return q[:3] * (2.0 * np.arctan2(s, q[3]) / s)


def rotvec_to_quat(v: np.ndarray) -> np.ndarray:
    """Quaternion ``(4,)`` xyzw of an axis-angle vector ``(3,)`` (rad)."""
    v = np.asarray(v, dtype=np.float64)
    angle = float(np.linalg.norm(v))
    if angle < 1e-12:
        return np.array([0.5 * v[0], 0.5 * v[1], 0.5 * v[2], 1.0]) / np.sqrt(1.0 + 0.25 * angle * angle)
    s = np.sin(angle / 2) / angle
    return np.array([v[0] * s, v[1] * s, v[2] * s, np.cos(angle / 2)])


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product ``a * b`` of quaternions ``(4,)`` xyzw (rotation ``b`` first, then ``a``)."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return np.array([aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw,
                     aw * bw - ax * bx - ay * by - az * bz])
