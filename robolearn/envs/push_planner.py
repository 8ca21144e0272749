"""A planar push planner for a T-shaped block: the logic of every PushT scripted expert.

Both PushT tasks (our MuJoCo port, :mod:`robolearn.envs.pusht`, in metres; and gym-pusht's pymunk
task, :mod:`robolearn.envs.gym_pusht`, in pixels of its 512 × 512 workspace) push the same T with a
round pusher; they differ in length unit, frame origin and where the block frame sits on the T. The
planner is units-agnostic: it sees the T through a :class:`TeeShape` (lengths in the task's unit), a
goal pose and a workspace box in that unit, and a ``scale``: how many task units one metre of the
MuJoCo port is (1 there; 1000 for gym-pusht, whose T is the MuJoCo T with 1 px for 1 mm). Its tuning
lengths (step limits, stand-off, clearances, the rotation model's radius) are written in metres of
the MuJoCo port and multiplied by ``scale``.

Block frame of the planner: the bar's centre at the origin, the bar along x, the stem towards −y.
A task whose block frame differs converts its pose first (gym-pusht: see
:func:`robolearn.envs.gym_pusht.planner_pose`).

The method (ours, no paper): greedy quasi-static pushing. A push along direction ``d`` at lever arm
``r`` from the centre of mass translates the block along ``d`` and turns it by ``(r × d) / ρ²``
(the quasi-static limit of a sliding block, as in Lynch & Mason 1996, "Stable pushing", Sec. 3,
with an isotropic ellipsoid of radius ``ρ``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from robolearn.utils.rotations import wrap_angle


@dataclass(frozen=True)
class TeeShape:
    """A T-shaped block and a round pusher, lengths in the task's unit, in the planner's block frame.

    Attributes:
        bar_half: half-extents ``(x, y)`` of the bar, centred at the origin.
        stem_centre_y: y of the stem's centre (negative: the stem hangs below the bar).
        stem_half: half-extents ``(x, y)`` of the stem.
        pusher_radius: radius of the pusher disc.
    """

    bar_half: tuple[float, float]
    stem_centre_y: float
    stem_half: tuple[float, float]
    pusher_radius: float

    def com(self) -> np.ndarray:
        """Centre of mass ``(2,)`` of the T (uniform density), block frame."""
        bar = 4 * self.bar_half[0] * self.bar_half[1]
        stem = 4 * self.stem_half[0] * self.stem_half[1]
        return np.array([0.0, self.stem_centre_y * stem / (bar + stem)])

    def sdf(self, points: np.ndarray) -> np.ndarray:
        """Signed distance of block-frame points ``(N, 2)`` to the T ``(N,)`` (negative inside)."""

        def box(p, centre, half):
            q = np.abs(p - centre) - half
            return np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(np.max(q, axis=1), 0.0)

        return np.minimum(box(points, np.zeros(2), np.array(self.bar_half)),
                          box(points, np.array([0.0, self.stem_centre_y]), np.array(self.stem_half)))

    def contact_candidates(self, spacing: float, tol: float) -> tuple[np.ndarray, np.ndarray]:
        """Points on the T's outline ``(N, 2)`` and their outward unit normals ``(N, 2)``, block frame,
        where the pusher disc touches the block at that point only (within ``tol``); about one per
        ``spacing``."""
        bx, by = self.bar_half
        sx = self.stem_half[0]
        sy0, sy1 = self.stem_centre_y - self.stem_half[1], self.stem_centre_y + self.stem_half[1]
        edges = [  # (start, end, normal)
            ((-bx, by), (bx, by), (0, 1)), ((-bx, -by), (-bx, by), (-1, 0)), ((bx, -by), (bx, by), (1, 0)),
            ((-bx, -by), (-sx, -by), (0, -1)), ((sx, -by), (bx, -by), (0, -1)),
            ((-sx, sy0), (-sx, sy1), (-1, 0)), ((sx, sy0), (sx, sy1), (1, 0)), ((-sx, sy0), (sx, sy0), (0, -1)),
        ]
        pts, normals = [], []
        for a, b, n in edges:
            a, b, n = np.array(a, float), np.array(b, float), np.array(n, float)
            k = max(2, int(np.ceil(np.linalg.norm(b - a) / spacing)) + 1)
            for t in np.linspace(0.1, 0.9, k):
                p = a + t * (b - a)
                if self.sdf((p + n * self.pusher_radius)[None])[0] > self.pusher_radius - tol:
                    pts.append(p)
                    normals.append(n)
        return np.array(pts), np.array(normals)


def _rot(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s], [s, c]])


class PlanarPushPlanner:
    """Greedy quasi-static pushes of a T towards a goal pose, re-planned every step.

    Each call scores every contact point on the T's outline by how well a push there (along the
    inward normal) would reduce the pose error (position of the centre of mass, and yaw weighed by
    ``yaw_weight`` lengths per radian), drives the pusher to the best contact around the block (along
    a circle that clears it) and pushes a distance proportional to the remaining error. A new contact
    is taken only when it scores clearly better than the current one, so demonstrations are not jittery.

    All lengths below are in metres of the MuJoCo PushT port and are multiplied by ``scale``.

    Args:
        shape: the block and pusher (task units).
        goal: goal pose ``(x, y, yaw)`` of the planner's block frame (task units, rad).
        low, high: workspace box of the pusher centre, ``(2,)`` each or scalars (task units).
        scale: task units per metre of the MuJoCo port (1.0 there, 1000.0 for gym-pusht's pixels).
        max_step: largest pusher move per call (m; 0.03 at 10 Hz).
        gain: push distance per unit of projected error (dimensionless).
        yaw_weight: metres of position error one radian of yaw error counts as.
        switch: move to another contact only when the current one scores below this fraction of the best.
        standoff: the pusher lines up this far (m) behind a contact before it pushes.
        clearance: smallest gap (m) between pusher and block on the way to a contact (no closer than
            the stand-off point itself).
        rho: radius (m) of the quasi-static rotation model.
        lineup_tol: how far (m) off the push line the pusher may be and still count as lined up.
        wall_routing: keep the routing circle inside the workspace box and go round the other way
            when the short way is blocked (a block near a wall); off: the circle is only clipped to
            the box (the MuJoCo PushT expert, whose block starts far from the walls).

    Raises:
        ValueError: ``scale`` or ``max_step`` not positive, or ``low >= high`` on an axis.
    """

    def __init__(self, shape: TeeShape, goal: Sequence[float], low, high, scale: float = 1.0,
                 max_step: float = 0.03, gain: float = 1.0, yaw_weight: float = 0.06, switch: float = 0.8,
                 standoff: float = 0.01, clearance: float = 0.01, rho: float = 0.04, lineup_tol: float = 0.004,
                 wall_routing: bool = False):
        if not (scale > 0 and max_step > 0):
            raise ValueError(f"scale and max_step must be positive, got scale={scale}, max_step={max_step}")
        self.low, self.high = np.broadcast_to(np.asarray(low, float), (2,)), np.broadcast_to(np.asarray(high, float), (2,))
        if np.any(self.low >= self.high):
            raise ValueError(f"workspace low {self.low} must be below high {self.high}")
        self.shape, self.goal, self.s = shape, np.asarray(goal, float), float(scale)
        self.wall_routing = bool(wall_routing)
        s = self.s
        self.max_step, self.gain, self.yaw_weight, self.switch = max_step * s, gain, yaw_weight * s, switch
        self.standoff, self.clearance, self.rho2, self.lineup_tol = standoff * s, clearance * s, (rho * s) ** 2, lineup_tol * s
        self.com = shape.com()
        self.goal_com = self.goal[:2] + _rot(self.goal[2]) @ self.com
        self.points, self.normals = shape.contact_candidates(0.01 * s, 1e-4 * s)
        # the routing circle around the centre of mass: past the bar's far corners (~0.08 m), plus the pusher
        self.route_radius = 0.08 * s + shape.pusher_radius + max(0.015 * s, self.clearance + 0.005 * s)
        self.reset()

    def reset(self) -> None:
        """Start a new episode: forget the current contact."""
        self.contact: int | None = None
        self.pushing = False  # whether the last target pushed (else it moved towards a contact)

    def scores(self, pose: np.ndarray) -> np.ndarray:
        """Score ``(N,)`` of each contact candidate for block ``pose = (x, y, yaw)``: the pose error's
        component along the block motion a push there makes (``-inf``: its approach point is outside
        the workspace)."""
        rot = _rot(pose[2])
        err = np.array([*(self.goal_com - (pose[:2] + rot @ self.com)), self.yaw_weight * wrap_angle(self.goal[2] - pose[2])])
        d = -(self.normals @ rot.T)                    # push directions, world
        r = (self.points - self.com) @ rot.T           # lever arms, world
        turn = (r[:, 0] * d[:, 1] - r[:, 1] * d[:, 0]) / self.rho2
        motion = np.column_stack([d, self.yaw_weight * turn])
        scores = motion @ err / np.linalg.norm(motion, axis=1)
        approach = pose[:2] + (self.points + self.normals * (self.shape.pusher_radius + 0.01 * self.s)) @ rot.T
        margin = 0.005 * self.s
        scores[np.any((approach < self.low + margin) | (approach > self.high - margin), axis=1)] = -np.inf
        return scores

    def __call__(self, pusher: np.ndarray, pose: np.ndarray) -> np.ndarray:
        """Next pusher target ``(2,)`` (task units, float64) for pusher centre ``(2,)`` and block
        ``pose = (x, y, yaw)`` (task units, rad; planner block frame)."""
        pusher, pose = np.asarray(pusher, float), np.asarray(pose, float)
        scores = self.scores(pose)
        best = int(np.argmax(scores))
        if self.contact is None or scores[self.contact] < self.switch * scores[best]:
            self.contact = best
        i = self.contact
        rot = _rot(pose[2])
        contact_centre = pose[:2] + rot @ (self.points[i] + self.normals[i] * self.shape.pusher_radius)
        push_world = rot @ -self.normals[i]
        # Relative to the contact: along the push direction (negative: outside) and across it.
        rel = pusher - contact_centre
        along, across = rel @ push_world, rel @ np.array([-push_world[1], push_world[0]])
        tol = self.lineup_tol
        self.pushing = bool(-max(0.03 * self.s, self.standoff + 0.005 * self.s) < along < tol and abs(across) < tol)
        if self.pushing:  # lined up behind the contact: push
            dist = float(np.clip(self.gain * max(scores[i], 0.0), 0.002 * self.s, self.max_step))
            target = contact_centre + push_world * dist
        else:
            target = self._approach(pusher, contact_centre - push_world * self.standoff, pose)
        step = target - pusher
        n = np.linalg.norm(step)
        if n > self.max_step:
            target = pusher + step * (self.max_step / n)
        margin = 0.005 * self.s
        return np.clip(target, self.low + margin, self.high - margin)

    def _approach(self, pusher: np.ndarray, pre: np.ndarray, pose: np.ndarray) -> np.ndarray:
        """Next waypoint towards ``pre`` that keeps the pusher clear of the block."""
        rot = _rot(pose[2])
        path = pusher + np.linspace(0, 1, 12)[:, None] * (pre - pusher)
        gap = self.shape.sdf((path - pose[:2]) @ rot) - self.shape.pusher_radius  # disc-to-block gap
        if np.all(gap > min(self.clearance, gap[-1] - 0.001 * self.s)):  # as close as ``pre`` itself at most
            return pre
        com = pose[:2] + rot @ self.com
        off = pusher - com
        dist = np.linalg.norm(off)
        a_now, a_pre = np.arctan2(off[1], off[0]), np.arctan2(*(pre - com)[::-1])
        radius = self._radius(com, a_now)
        if dist < radius - 0.005 * self.s:  # first straight out, away from the block
            return com + off / max(dist, 1e-6 * self.s) * radius
        delta = wrap_angle(a_pre - a_now)
        if abs(delta) < 1e-3:  # on the circle, at the contact's bearing: go in (the only way there)
            return pre
        direction, span = np.sign(delta), abs(delta)
        if self.wall_routing and not self._arc_clear(com, pose, a_now, direction, span):
            if self._arc_clear(com, pose, a_now, -direction, 2 * np.pi - span):  # the other way round
                direction, span = -direction, 2 * np.pi - span
        a_next = a_now + direction * min(span, self.max_step / radius)
        return com + self._radius(com, a_next) * np.array([np.cos(a_next), np.sin(a_next)])

    def _radius(self, com: np.ndarray, angle: float) -> float:
        """Routing radius at bearing ``angle`` from ``com``: :attr:`route_radius`, and with
        ``wall_routing`` no further out than the workspace box (less a margin) along that bearing."""
        if not self.wall_routing:
            return self.route_radius
        u = np.array([np.cos(angle), np.sin(angle)])
        margin = 0.005 * self.s
        with np.errstate(divide="ignore", invalid="ignore"):
            limits = np.where(u > 1e-9, (self.high - margin - com) / u, np.where(u < -1e-9, (self.low + margin - com) / u, np.inf))
        return float(max(min(self.route_radius, limits.min()), 0.0))

    def _arc_clear(self, com: np.ndarray, pose: np.ndarray, a_from: float, direction: float, span: float) -> bool:
        """Whether the routing arc from bearing ``a_from`` turning ``direction * span`` (rad) keeps
        the pusher at least 2 mm (× ``scale``) off the block, with radii cut at the workspace box."""
        angles = a_from + direction * np.linspace(0.0, span, int(np.ceil(span / 0.1)) + 1)
        radii = np.array([self._radius(com, a) for a in angles])
        pts = com + radii[:, None] * np.column_stack([np.cos(angles), np.sin(angles)])
        gap = self.shape.sdf((pts - pose[:2]) @ _rot(pose[2])) - self.shape.pusher_radius
        return bool(np.all(gap > 0.002 * self.s))
