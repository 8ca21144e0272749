"""Scripted experts: closed-loop state machines that stand in for a teleoperator.

An expert reads the same observation a policy gets and returns an action in the environment's
action units. It is used to generate demonstrations for tests, the quickstart and benchmarks.
"""

from __future__ import annotations

import numpy as np

from robolearn.envs.robosuite_env import MAX_DELTA_POS, MAX_DELTA_ROT
from robolearn.utils.rotations import quat_xyzw_to_matrix


def wrap_angle(a: float, period: float = 2 * np.pi) -> float:
    """Wrap ``a`` (rad) into ``[-period/2, period/2)``."""
    return float((a + period / 2) % period - period / 2)


class LiftExpert:
    """Scripted grasp-and-lift for the robosuite Lift cube.

    Phases: move above the cube while turning the gripper to the cube's yaw (the cube is symmetric
    under 90° turns, so the nearest face is used), descend to grasp height, close the gripper, lift.
    Position commands are proportional to the remaining error, clipped to the per-step limit.

    Args:
        gain: proportional gain from position error (m) to per-step delta (m).
        hover: height above the cube centre (m) of the pre-grasp pose.
        lift_height: height (m) above the grasp point that the lift phase aims for.
        noise_std: std (m) of Gaussian noise added to position commands, for diverse demos.
        seed: seed of that noise.
    """

    def __init__(self, gain: float = 1.0, hover: float = 0.06, lift_height: float = 0.15,
                 noise_std: float = 0.0, seed: int | None = None):
        self.gain = gain
        self.hover = hover
        self.lift_height = lift_height
        self.noise_std = noise_std
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        """Start a new episode (and reseed the command noise if ``seed`` is given)."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.phase = "approach"
        self._grip_steps = 0
        self._grasp_point = None

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Action ``(7,)`` for one observation dict of :class:`RobosuiteEnv` (Lift)."""
        eef = obs["robot0_eef_pos"].astype(np.float64)
        cube = obs["object"][:3].astype(np.float64)
        cube_quat = obs["object"][3:7]
        rot = quat_xyzw_to_matrix(obs["robot0_eef_quat"])
        # Gripper yaw: direction of the gripper's x axis in the world xy plane.
        grip_yaw = np.arctan2(rot[1, 0], rot[0, 0])
        cube_rot = quat_xyzw_to_matrix(cube_quat)
        cube_yaw = np.arctan2(cube_rot[1, 0], cube_rot[0, 0])
        yaw_err = wrap_angle(cube_yaw - grip_yaw, np.pi / 2)

        gripper = -1.0
        rot_cmd = np.array([0.0, 0.0, np.clip(2.0 * yaw_err, -MAX_DELTA_ROT, MAX_DELTA_ROT)])
        if self.phase == "approach":
            target = cube + np.array([0.0, 0.0, self.hover])
            if np.linalg.norm(target - eef) < 0.012 and abs(yaw_err) < 0.06:
                self.phase = "descend"
        if self.phase == "descend":
            target = cube + np.array([0.0, 0.0, -0.005])
            if abs(target[2] - eef[2]) < 0.01 and np.linalg.norm((target - eef)[:2]) < 0.01:
                self.phase = "grasp"
                self._grasp_point = eef.copy()
        if self.phase == "grasp":
            target = self._grasp_point
            gripper = 1.0
            self._grip_steps += 1
            if self._grip_steps >= 6:
                self.phase = "lift"
        if self.phase == "lift":
            target = self._grasp_point + np.array([0.0, 0.0, self.lift_height])
            gripper = 1.0
            rot_cmd[:] = 0.0
        delta = np.clip(self.gain * (target - eef), -MAX_DELTA_POS, MAX_DELTA_POS)
        if self.noise_std > 0 and self.phase in ("approach", "lift"):
            delta = np.clip(delta + self.rng.normal(0, self.noise_std, 3), -MAX_DELTA_POS, MAX_DELTA_POS)
        return np.concatenate([delta, rot_cmd, [gripper]]).astype(np.float32)
