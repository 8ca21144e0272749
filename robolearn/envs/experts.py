"""Scripted experts: closed-loop state machines that stand in for a teleoperator.

An expert reads the same observation a policy gets and returns an action in the environment's
action units. It is used to generate demonstrations for tests, the quickstart and benchmarks.
The robosuite experts here and the insertion expert (:mod:`robolearn.envs.insertion`) share
:class:`PhaseExpert`: a named phase, a step counter for timed phases (gripper closing/opening),
and proportional position steps clipped to the per-step limit, with optional Gaussian noise while
the arm moves freely (for diverse demonstrations).
"""

from __future__ import annotations

import numpy as np

from robolearn.envs.actions import GRIPPER_CLOSE, GRIPPER_OPEN, MAX_DELTA_POS, MAX_DELTA_ROT
from robolearn.utils.rotations import quat_xyzw_to_matrix, wrap_angle

__all__ = ["PhaseExpert", "LiftExpert", "CanExpert", "SquareExpert", "wrap_angle",
           "CAN_TARGET", "SQUARE_PEG", "SQUARE_PEG_TOP", "NUT_HANDLE"]


class PhaseExpert:
    """Base of the phase-machine experts.

    A subclass sets :attr:`initial_phase`, the phases in which position commands get noise
    (:attr:`noisy_phases`) and the per-step limit (:attr:`max_step`, m), and writes ``__call__``
    with :meth:`enter`, :meth:`waited` and :meth:`position_step`. The noise generator is drawn
    from only when ``noise_std > 0`` and the phase is noisy, so a noise-free expert is
    deterministic and seeding changes nothing.

    Args:
        gain: proportional gain from position error (m) to per-step delta (m).
        noise_std: std (m) of Gaussian noise added to position commands in :attr:`noisy_phases`.
        seed: seed of that noise.
    """

    initial_phase = "approach"
    noisy_phases: tuple[str, ...] = ()
    max_step = MAX_DELTA_POS

    def __init__(self, gain: float = 1.0, noise_std: float = 0.0, seed: int | None = None):
        self.gain, self.noise_std = gain, noise_std
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        """Start a new episode in :attr:`initial_phase` (and reseed the command noise if ``seed`` is given)."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.phase, self.count = self.initial_phase, 0

    def enter(self, phase: str) -> None:
        """Switch to ``phase`` and restart the step counter."""
        self.phase, self.count = phase, 0

    def waited(self, steps: int) -> bool:
        """Count one step in the current phase; true once ``steps`` steps have been counted."""
        self.count += 1
        return self.count >= steps

    def position_step(self, target: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Per-step position command ``(3,)`` (m) from ``pos`` towards ``target`` (m, ``(3,)`` each):
        ``gain * (target - pos)`` clipped to ``±max_step`` per axis, plus clipped noise in a noisy phase."""
        delta = np.clip(self.gain * (target - pos), -self.max_step, self.max_step)
        if self.noise_std > 0 and self.phase in self.noisy_phases:
            delta = np.clip(delta + self.rng.normal(0, self.noise_std, 3), -self.max_step, self.max_step)
        return delta


class LiftExpert(PhaseExpert):
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

    noisy_phases = ("approach", "lift")

    def __init__(self, gain: float = 1.0, hover: float = 0.06, lift_height: float = 0.15,
                 noise_std: float = 0.0, seed: int | None = None):
        self.hover = hover
        self.lift_height = lift_height
        super().__init__(gain, noise_std, seed)

    def reset(self, seed: int | None = None) -> None:
        """Start a new episode (and reseed the command noise if ``seed`` is given)."""
        super().reset(seed)
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

        gripper = GRIPPER_OPEN
        rot_cmd = np.array([0.0, 0.0, np.clip(2.0 * yaw_err, -MAX_DELTA_ROT, MAX_DELTA_ROT)])
        if self.phase == "approach":
            target = cube + np.array([0.0, 0.0, self.hover])
            if np.linalg.norm(target - eef) < 0.012 and abs(yaw_err) < 0.06:
                self.phase = "descend"
        if self.phase == "descend":
            target = cube + np.array([0.0, 0.0, -0.005])
            if abs(target[2] - eef[2]) < 0.01 and np.linalg.norm((target - eef)[:2]) < 0.01:
                self.enter("grasp")
                self._grasp_point = eef.copy()
        if self.phase == "grasp":
            target = self._grasp_point
            gripper = GRIPPER_CLOSE
            if self.waited(6):
                self.phase = "lift"
        if self.phase == "lift":
            target = self._grasp_point + np.array([0.0, 0.0, self.lift_height])
            gripper = GRIPPER_CLOSE
            rot_cmd[:] = 0.0
        delta = self.position_step(target, eef)
        return np.concatenate([delta, rot_cmd, [gripper]]).astype(np.float32)


#: Where PickPlaceCan wants the can: the centre of bin 2's quadrant for object id 3 (robosuite's
#: ``target_bin_placements``; a test checks it against the environment), world frame (m).
CAN_TARGET = np.array([0.1975, 0.4025, 0.8])


class CanExpert(PhaseExpert):
    """Scripted pick-and-place for robosuite PickPlaceCan: over the can, down, close, lift to a carry
    height, over the target quadrant of the second bin, down, open, and away (the task counts
    success only once the gripper has left the can).

    Position commands are proportional to the remaining error and clipped to the per-step limit;
    the gripper keeps its orientation (the can is round).

    Args:
        gain: proportional gain from position error (m) to per-step delta (m).
        carry_z: carrying height of the gripper (m, world).
        noise_std: std (m) of Gaussian noise on position commands while moving freely.
        seed: seed of that noise.
    """

    noisy_phases = ("approach", "lift", "carry", "retreat")

    def __init__(self, gain: float = 1.0, carry_z: float = 1.05, noise_std: float = 0.0, seed: int | None = None):
        self.carry_z = carry_z
        super().__init__(gain, noise_std, seed)

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Action ``(7,)`` for one observation dict of :class:`RobosuiteEnv` (``can``)."""
        eef = obs["robot0_eef_pos"].astype(np.float64)
        can = obs["object"][:3].astype(np.float64)
        grip = GRIPPER_CLOSE if self.phase in ("grasp", "lift", "carry", "lower") else GRIPPER_OPEN
        if self.phase == "approach":
            target = np.array([can[0], can[1], max(can[2] + 0.08, eef[2] - 0.05)])
            if np.linalg.norm((target - eef)[:2]) < 0.01 and abs(can[2] + 0.08 - eef[2]) < 0.02:
                self.phase = "descend"
        if self.phase == "descend":
            target = can + np.array([0.0, 0.0, 0.0])
            if np.linalg.norm(target - eef) < 0.012:
                self.enter("grasp")
        if self.phase == "grasp":
            target = eef
            if self.waited(6):
                self.phase = "lift"
        if self.phase == "lift":
            target = np.array([eef[0], eef[1], self.carry_z])
            if eef[2] > self.carry_z - 0.02:
                self.phase = "carry"
        if self.phase == "carry":
            target = np.array([CAN_TARGET[0], CAN_TARGET[1], self.carry_z])
            if np.linalg.norm((target - eef)[:2]) < 0.015:
                self.phase = "lower"
        if self.phase == "lower":
            target = np.array([CAN_TARGET[0], CAN_TARGET[1], CAN_TARGET[2] + 0.12])
            if eef[2] < target[2] + 0.015:
                self.enter("release")
        if self.phase == "release":
            target = eef
            if self.waited(4):
                self.phase = "retreat"
        if self.phase == "retreat":
            target = np.array([CAN_TARGET[0], CAN_TARGET[1], self.carry_z])
        delta = self.position_step(target, eef)
        return np.concatenate([delta, np.zeros(3), [grip]]).astype(np.float32)


#: NutAssemblySquare's square peg (robosuite ``peg1``): position of its base (m, world) and the
#: height its top reaches (m); a test checks both against the environment.
SQUARE_PEG = np.array([0.23, 0.1, 0.85])
SQUARE_PEG_TOP = 0.95
#: Grasp point on the nut's handle, in the nut's frame (m): the handle runs along the nut's x axis.
NUT_HANDLE = np.array([0.06, 0.0, 0.0])


class SquareExpert(PhaseExpert):
    """Scripted nut assembly for robosuite NutAssemblySquare: grasp the square nut by its handle
    with the fingers closing across it, lift it above the square peg, turn it so that its hole
    lines up with the peg (the hole is square: any multiple of 90°), centre it over the peg, lower
    it to the table, open and move away.

    Position commands are proportional to the remaining error and clipped to the per-step limit;
    yaw commands likewise (rad).

    Args:
        gain: proportional gain from position error (m) to per-step delta (m).
        yaw_gain: proportional gain from yaw error (rad) to per-step rotation (rad).
        max_yaw_step: largest rotation per step (rad): turning fast loosens the grasp.
        noise_std: std (m) of Gaussian noise on position commands while moving freely.
        seed: seed of that noise.
    """

    noisy_phases = ("approach", "lift", "retreat")

    def __init__(self, gain: float = 1.0, yaw_gain: float = 1.0, max_yaw_step: float = 0.15, noise_std: float = 0.0,
                 seed: int | None = None):
        self.yaw_gain, self.max_yaw_step = yaw_gain, max_yaw_step
        super().__init__(gain, noise_std, seed)

    def reset(self, seed: int | None = None) -> None:
        """Start a new episode (and reseed the command noise if ``seed`` is given)."""
        super().reset(seed)
        self.offset = None

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Action ``(7,)`` for one observation dict of :class:`RobosuiteEnv` (``square``)."""
        eef = obs["robot0_eef_pos"].astype(np.float64)
        nut, nut_rot = obs["object"][:3].astype(np.float64), quat_xyzw_to_matrix(obs["object"][3:7])
        rot = quat_xyzw_to_matrix(obs["robot0_eef_quat"])
        grip_yaw = np.arctan2(rot[1, 0], rot[0, 0])
        nut_yaw = np.arctan2(nut_rot[1, 0], nut_rot[0, 0])
        handle = nut + nut_rot @ NUT_HANDLE
        yaw_err = wrap_angle(nut_yaw - grip_yaw, np.pi)  # gripper x along the handle, either way round
        if self.phase in ("lift", "carry", "lower") and eef[2] - nut[2] > self.offset[2] + 0.03:
            self.phase = "approach"  # the nut stayed behind: grasp again
        grip = GRIPPER_CLOSE if self.phase in ("grasp", "lift", "carry", "lower") else GRIPPER_OPEN
        if self.phase == "approach":
            target = handle + np.array([0.0, 0.0, 0.08])
            if np.linalg.norm(target - eef) < 0.012 and abs(yaw_err) < 0.05:
                self.phase = "descend"
        if self.phase == "descend":
            target = handle + np.array([0.0, 0.0, 0.0])
            if np.linalg.norm(target - eef) < 0.008:
                self.enter("grasp")
        if self.phase == "grasp":
            target, yaw_err = eef, 0.0
            if self.waited(10):  # the fingers close slowly: ~10 steps onto the handle
                self.phase, self.offset = "lift", eef - nut
        if self.phase in ("lift", "carry", "lower"):
            # Now the nut turns with the gripper: square its hole with the peg (multiples of 90°).
            yaw_err = wrap_angle(0.0 - nut_yaw, np.pi / 2)
            centre_to_eef = eef - nut
            carry_z = SQUARE_PEG_TOP + 0.04 + self.offset[2]
        if self.phase == "lift":
            target, yaw_err = np.array([eef[0], eef[1], carry_z]), 0.0
            if eef[2] > carry_z - 0.02:
                self.phase = "carry"
        if self.phase == "carry":
            target = np.array([SQUARE_PEG[0], SQUARE_PEG[1], 0.0]) + centre_to_eef
            target[2] = carry_z
            if np.linalg.norm((SQUARE_PEG - nut)[:2]) < 0.004 and abs(yaw_err) < 0.03:
                self.phase = "lower"
        if self.phase == "lower":
            target = np.array([SQUARE_PEG[0], SQUARE_PEG[1], 0.0]) + centre_to_eef
            target[2] = eef[2] - 0.03
            if nut[2] < 0.845:
                self.enter("release")
        if self.phase == "release":
            target, yaw_err = eef, 0.0
            if self.waited(4):
                self.phase = "retreat"
        if self.phase == "retreat":
            target, yaw_err = np.array([eef[0], eef[1], 1.05]), 0.0
        delta = self.position_step(target, eef)
        rot_cmd = [0.0, 0.0, float(np.clip(self.yaw_gain * yaw_err, -self.max_yaw_step, self.max_yaw_step))]
        return np.concatenate([delta, rot_cmd, [grip]]).astype(np.float32)
