"""Each task's action convention: how a policy's action vector becomes an end-effector pose goal
(or a joint-position target), and back (what a teleop recording stores as the task's action).

The HAL (:mod:`robolearn.robots`) is task-agnostic: its :class:`~robolearn.robots.session.ChunkCommands`
asks an *action adapter* for the pose goal of each action and turns it into a command. The adapters
live here, beside the tasks whose conventions they encode:

* :class:`DeltaEefAdapter`: robosuite-style relative actions (our Lift task): a goal offset from
  the pose measured at the start of the action's slot, held for the slot, exactly as the
  simulator's operational-space controller applies it during ``robolearn eval``;
* :class:`AbsoluteEefAdapter`: absolute pose actions (position, xyzw quaternion, gripper opening),
  which the scheduler interpolates to the loop rate (linear + SLERP);
* :class:`JointPositionAdapter`: absolute joint-position actions (joint targets in rad, gripper
  opening in ``[0, 1]``; our so101_pick task and leader-arm recordings), which become joint-position
  commands instead of pose goals (``mode = "joint_position"``), each held for its slot as the
  environment holds it for its control period.

Every adapter names the control mode its commands use (``mode``, a
:class:`~robolearn.robots.types.ControlMode` value): ``"eef_pose"`` adapters give ``to_goal``,
``"joint_position"`` ones ``to_joints``.

Gripper conventions: actions carry robosuite's command in ``[-1, 1]`` (-1 open, +1 closed); the
HAL's commands carry an opening in ``[0, 1]`` (1 open).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from robolearn.utils.rotations import quat_multiply, rotvec_to_quat

#: Largest goal offset one Lift-convention action may hold (m, rad), as in the eval environment.
MAX_DELTA_POS, MAX_DELTA_ROT = 0.05, 0.5

#: Gripper commands of the task actions (robosuite's convention): -1 opens, +1 closes.
GRIPPER_OPEN, GRIPPER_CLOSE = -1.0, 1.0


def gripper_opening(command: float) -> float:
    """The HAL's gripper opening in ``[0, 1]`` (1 open) for an action's gripper command in
    ``[-1, 1]`` (-1 open, +1 closed): ``(1 - g) / 2``, clipped to ``[0, 1]``."""
    return float(np.clip((1.0 - command) / 2.0, 0.0, 1.0))


def gripper_command(opening: float) -> float:
    """The action's gripper command in ``[-1, 1]`` (-1 open) for a HAL opening in ``[0, 1]``
    (1 open; clipped to ``[0, 1]`` first): ``1 - 2 * opening``. Inverse of :func:`gripper_opening`."""
    return 1.0 - 2.0 * float(np.clip(opening, 0.0, 1.0))


class DeltaEefAdapter:
    """Relative EEF action ``(7,)``: ``[dx, dy, dz]`` m and an axis-angle ``[rx, ry, rz]`` rad in the
    base frame, then the gripper in ``[-1, 1]`` (-1 open, +1 closed; robosuite's convention).

    The goal is the anchor pose (measured at the start of the action's slot) moved by the offset;
    the gripper opening is :func:`gripper_opening` of the command.
    """

    action_dim = 7
    mode = "eef_pose"
    interpolate = False
    quat_slice = None
    #: ``action_space`` attributes of a store whose ``action`` key uses this convention.
    space_type = "eef_delta_pose_world"
    layout = ("dx m", "dy m", "dz m", "drx rad", "dry rad", "drz rad", "gripper [-1 open, 1 close]")
    low = (-MAX_DELTA_POS,) * 3 + (-MAX_DELTA_ROT,) * 3 + (-1.0,)
    high = (MAX_DELTA_POS,) * 3 + (MAX_DELTA_ROT,) * 3 + (1.0,)

    def to_goal(self, action: np.ndarray, anchor_pos: np.ndarray,
                anchor_quat: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """The pose goal of ``action`` ``(7,)`` from the anchor pose (position m ``(3,)``, xyzw ``(4,)``).

        Returns:
            ``(position m (3,), quaternion xyzw (4,), gripper opening in [0, 1])``.
        """
        a = np.asarray(action, dtype=np.float64)
        quat = quat_multiply(rotvec_to_quat(a[3:6]), np.asarray(anchor_quat, np.float64))
        return np.asarray(anchor_pos) + a[:3], quat, gripper_opening(a[6])

    def from_goal(self, target_pos: np.ndarray, target_quat: np.ndarray, opening: float,
                  eef_pos: np.ndarray, eef_quat: np.ndarray) -> np.ndarray:
        """The action ``(7,)`` float32 that asks for the target pose from the measured one: position
        offset (m) and axis-angle (rad), clipped to the eval environment's limits, and the gripper
        in ``[-1, 1]`` (-1 open) from the opening in ``[0, 1]``."""
        dpos = np.clip(np.asarray(target_pos) - eef_pos, -MAX_DELTA_POS, MAX_DELTA_POS)
        drot = (Rotation.from_quat(target_quat) * Rotation.from_quat(eef_quat).inv()).as_rotvec()
        drot = np.clip(drot, -MAX_DELTA_ROT, MAX_DELTA_ROT)
        return np.concatenate([dpos, drot, [gripper_command(opening)]]).astype(np.float32)


class AbsoluteEefAdapter:
    """Absolute EEF action ``(8,)``: position m, quaternion xyzw, gripper opening in ``[0, 1]``."""

    action_dim = 8
    mode = "eef_pose"
    interpolate = True
    quat_slice = (3, 7)

    def to_goal(self, action: np.ndarray, anchor_pos: np.ndarray,
                anchor_quat: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """The pose goal of ``action`` ``(8,)``; the anchor is unused."""
        a = np.asarray(action, dtype=np.float64)
        return a[:3], a[3:7], float(a[7])


class JointPositionAdapter:
    """Absolute joint-position action ``(n_joints + 1,)``: joint targets (rad, the robot's joint order)
    and the gripper opening target in ``[0, 1]`` (0 closed, 1 open) — so101_pick's action and what a
    leader-arm recording stores (action space ``joint_position``).

    Each action becomes a joint-position command held for its slot (``interpolate = False``), as the
    environment holds it for its control period. Targets outside the joint ranges or an opening
    outside ``[0, 1]`` are clamped by the safety layer, as the environment clips them; what the
    safety layer would refuse (a wrong size, NaN or Inf) is refused here, with the action named.

    Args:
        n_joints: number of arm joints (5 on the SO-100/101).
    """

    mode = "joint_position"
    interpolate = False
    quat_slice = None
    space_type = "joint_position"

    def __init__(self, n_joints: int = 5):
        self.n_joints = int(n_joints)
        self.action_dim = self.n_joints + 1

    def to_joints(self, action: np.ndarray) -> tuple[np.ndarray, float]:
        """Joint targets ``(n_joints,)`` rad (float64) and the gripper opening of ``action`` ``(n_joints + 1,)``.

        Raises:
            ValueError: ``action`` does not have ``n_joints + 1`` entries, or holds NaN or Inf
                (the message gives the action).
        """
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (self.action_dim,):
            raise ValueError(f"a joint-position action must have {self.action_dim} entries ({self.n_joints} joint "
                             f"targets in rad, gripper opening), got shape {a.shape}: {a}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"joint-position action is not finite (refused, not sent to the robot): {a}")
        return a[:self.n_joints].copy(), float(a[self.n_joints])


#: Adapter classes by name.
ADAPTERS = {"delta_eef": DeltaEefAdapter, "absolute_eef": AbsoluteEefAdapter, "joint_position": JointPositionAdapter}

#: The action convention of each task's ``action`` key (tasks deployable through the HAL).
TASK_ACTION_ADAPTER = {"lift": "delta_eef", "so101_pick": "joint_position"}


def task_action_adapter(task: str):
    """A new adapter for the convention of task ``task``'s actions.

    Raises:
        KeyError: no convention is known for the task (the message lists those that are).
    """
    if task not in TASK_ACTION_ADAPTER:
        raise KeyError(f"no action convention known for task {task!r} (known: {sorted(TASK_ACTION_ADAPTER)})")
    return ADAPTERS[TASK_ACTION_ADAPTER[task]]()
