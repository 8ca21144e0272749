"""Precision insertion in plain MuJoCo: a floating parallel gripper picks a square peg and inserts it
into a square hole with 3 mm clearance per side (``sim/insertion.xml``).

The residual-RL testbed, so it is built for speed: one model load, resets by ``mj_resetData`` plus
re-placing the hole block (a model field, no recompiling) and the peg, and the physics stepped in C
(``mj_step`` with ``nstep``). Deterministic under a seed.

* Observation (float32): ``robot0_eef_pos`` (3,) gripper position m (the hand is a free body welded
  to a mocap target, so it moves with real velocities and friction carries the peg); ``robot0_gripper_qpos`` (2,)
  finger closure m (0 open, 0.03 closed); ``object`` (13,): peg position m, peg quaternion (xyzw),
  hole position m (the hole's floor centre), peg-bottom-to-hole-floor vector m.
* Action (4,): gripper displacement ``[dx, dy, dz]`` m for this step (clipped to 1 cm; applied in
  four equal sub-moves of the mocap target), then the gripper command in ``[-1, 1]`` (-1 open, +1 close).
* Cameras (optional): ``cameras=("top", "front")`` adds ``"<camera>_image"`` keys, ``uint8 (H, W, 3)``;
  ``render_mode="rgb_array"`` makes :meth:`render` return frames for videos.
* Control at 20 Hz: one step is 12 physics steps of 4 ms.
* Success: the peg's bottom is at least 2.5 cm down the 4 cm hole and within 3 mm of its axis, held
  for ``hold_steps`` consecutive steps (``info["is_success"]``; ``terminated`` on success).
"""

from __future__ import annotations

from typing import Sequence

import gymnasium as gym
import mujoco
import numpy as np

from robolearn.envs.actions import GRIPPER_CLOSE, GRIPPER_OPEN
from robolearn.envs.experts import PhaseExpert
from robolearn.envs.rendering import CameraEnvMixin

MAX_STEP_M = 0.01
FINGER_CLOSED = 0.03
HOLE_DEPTH = 0.04
CLEARANCE = 0.003


class InsertionEnv(CameraEnvMixin, gym.Env):
    """Peg-in-hole with a mocap-driven parallel gripper (see the module docstring).

    Args:
        max_episode_steps: truncation (steps at 20 Hz).
        hold_steps: consecutive inserted steps needed for success.
        terminate_on_success: end the episode on success.
        cameras: cameras whose images join the observation (``"top"``, ``"front"``).
        image_size: ``(height, width)`` of camera observations, pixels.
        render_mode: ``None`` or ``"rgb_array"`` (then :meth:`render` returns a frame).
        render_camera, render_size: camera and ``(height, width)`` of :meth:`render`.

    Raises:
        FileNotFoundError: the shipped MJCF is missing (broken install).
        ValueError: an unknown camera or render mode.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}
    #: What the action means (stored with demonstrations) and its layout, one entry per dimension.
    action_type = "eef_displacement_world"
    action_layout = ("dx m", "dy m", "dz m", "gripper [-1 open, 1 close]")
    SUBSTEPS = 12
    SUBMOVES = 4

    def __init__(self, max_episode_steps: int = 200, hold_steps: int = 5, terminate_on_success: bool = True,
                 cameras: Sequence[str] = (), image_size: Sequence[int] = (84, 84), render_mode: str | None = None,
                 render_camera: str = "front", render_size: Sequence[int] = (240, 320)):
        from robolearn.envs.rendering import EnvCameras
        from robolearn.utils.paths import sim_dir

        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode

        self.model = mujoco.MjModel.from_xml_path(str(sim_dir() / "insertion.xml"))
        self.data = mujoco.MjData(self.model)
        m = self.model
        self.max_episode_steps, self.hold_steps = int(max_episode_steps), int(hold_steps)
        self.terminate_on_success = terminate_on_success
        self._block = m.body("block").id
        self._hand_mocap = m.body("target").mocapid[0]
        self._hand_qpos = m.joint("hand").qposadr[0]
        self._grip = m.site("grip").id
        self._peg_qpos = m.joint("peg").qposadr[0]
        self._fingers = [m.joint("finger_l").qposadr[0], m.joint("finger_r").qposadr[0]]
        self._peg_bottom = m.site("peg_bottom").id
        self._hole = m.site("hole").id
        self.control_dt = self.SUBSTEPS * m.opt.timestep
        self.cameras = EnvCameras(cameras, image_size, render_camera, render_size)
        self.cameras.check(m)
        self.observation_space = gym.spaces.Dict({
            "robot0_eef_pos": gym.spaces.Box(-np.inf, np.inf, (3,), np.float32),
            "robot0_gripper_qpos": gym.spaces.Box(-np.inf, np.inf, (2,), np.float32),
            "object": gym.spaces.Box(-np.inf, np.inf, (13,), np.float32),
            **self.cameras.spaces(),
        })
        high = np.array([MAX_STEP_M] * 3 + [1.0], np.float32)
        self.action_space = gym.spaces.Box(-high, high, dtype=np.float32)
        self._t = 0
        self._held = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """New episode: peg in the left half of the table, hole block in the right half, gripper
        above, all positions drawn from ``seed``. Returns ``(obs, info)``."""
        super().reset(seed=seed)
        rng = np.random.default_rng(seed)
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        m.body_pos[self._block][:2] = [rng.uniform(0.06, 0.14), rng.uniform(-0.08, 0.08)]
        q = self._peg_qpos
        d.qpos[q:q + 3] = [rng.uniform(-0.14, -0.06), rng.uniform(-0.08, 0.08), 0.04]
        d.qpos[q + 3:q + 7] = [1.0, 0.0, 0.0, 0.0]
        hand = [rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05), rng.uniform(0.15, 0.2)]
        d.mocap_pos[self._hand_mocap] = hand
        h = self._hand_qpos
        d.qpos[h:h + 3] = hand
        d.qpos[h + 3:h + 7] = [1.0, 0.0, 0.0, 0.0]
        d.ctrl[:] = 0.0
        mujoco.mj_forward(m, d)
        self._t = self._held = 0
        return self._obs(), {"is_success": False}

    def step(self, action):
        """Move the gripper by ``action[:3]`` (m, clipped to 1 cm) and command the fingers.

        Raises:
            ValueError: wrong shape or non-finite action.
        """
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (4,) or not np.all(np.isfinite(a)):
            raise ValueError(f"action must be 4 finite numbers, got {a!r}")
        a = np.clip(a, self.action_space.low, self.action_space.high)
        m, d = self.model, self.data
        d.ctrl[:] = FINGER_CLOSED * (1.0 + a[3]) / 2.0
        delta = a[:3] / self.SUBMOVES
        for _ in range(self.SUBMOVES):
            d.mocap_pos[self._hand_mocap] += delta
            d.mocap_pos[self._hand_mocap][2] = max(d.mocap_pos[self._hand_mocap][2], 0.03)
            mujoco.mj_step(m, d, nstep=self.SUBSTEPS // self.SUBMOVES)
        self._t += 1
        inserted = self._inserted()
        self._held = self._held + 1 if inserted else 0
        success = self._held >= self.hold_steps
        terminated = success and self.terminate_on_success
        truncated = self._t >= self.max_episode_steps
        return self._obs(), float(success), terminated, truncated, {"is_success": success}

    def _inserted(self) -> bool:
        d = self.data
        bottom, hole = d.site_xpos[self._peg_bottom], d.site_xpos[self._hole]
        return bool(bottom[2] - hole[2] < HOLE_DEPTH - 0.025 and np.linalg.norm(bottom[:2] - hole[:2]) < CLEARANCE)

    def _obs(self) -> dict[str, np.ndarray]:
        d = self.data
        q = self._peg_qpos
        peg_pos = d.qpos[q:q + 3]
        wxyz = d.qpos[q + 3:q + 7]
        hole = d.site_xpos[self._hole]
        obj = np.concatenate([peg_pos, wxyz[1:], wxyz[:1], hole, hole - d.site_xpos[self._peg_bottom]])
        return {"robot0_eef_pos": d.site_xpos[self._grip].astype(np.float32),
                "robot0_gripper_qpos": d.qpos[self._fingers].astype(np.float32),
                "object": obj.astype(np.float32),
                **self.cameras.obs(self.model, d)}


class InsertionExpert(PhaseExpert):
    """Scripted peg insertion: above the peg, down, close, lift, over the hole, down slowly, hold.

    Args:
        gain: proportional gain from position error to step (m per m).
        noise_std: std (m) of Gaussian noise on position commands while moving freely (above the
            peg and lifting); 0 (the default) makes the expert deterministic.
        seed: seed of that noise.
    """

    GRASP_ABOVE_CENTRE = 0.03   # gripper height above the peg centre when grasping (m)
    CARRY_HEIGHT = 0.14         # gripper height while carrying (m)
    initial_phase = "above_peg"
    noisy_phases = ("above_peg", "lift")
    max_step = MAX_STEP_M

    def __init__(self, gain: float = 0.6, noise_std: float = 0.0, seed: int | None = None):
        super().__init__(gain, noise_std, seed)

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The action ``(4,)`` for ``obs``."""
        hand = obs["robot0_eef_pos"].astype(np.float64)
        obj = obs["object"].astype(np.float64)
        peg, hole = obj[:3], obj[7:10]
        grasp_offset = self.GRASP_ABOVE_CENTRE + 0.04  # hand height above the peg bottom when held
        grip = GRIPPER_OPEN
        if self.phase == "above_peg":
            target = peg + [0, 0, 0.08]
            if np.linalg.norm(target - hand) < 0.004:
                self.phase = "down_to_peg"
        elif self.phase == "down_to_peg":
            target = peg + [0, 0, self.GRASP_ABOVE_CENTRE]
            if np.linalg.norm(target - hand) < 0.002:
                self.enter("close")
        elif self.phase == "close":
            target, grip = hand, GRIPPER_CLOSE
            if self.waited(6):
                self.phase = "lift"
        elif self.phase == "lift":
            target, grip = np.array([hand[0], hand[1], self.CARRY_HEIGHT]), GRIPPER_CLOSE
            if abs(target[2] - hand[2]) < 0.004:
                self.phase = "over_hole"
        elif self.phase == "over_hole":
            # Align the peg (not the hand): the peg may sit slightly off-centre in the fingers.
            target = hand + np.array([hole[0] - peg[0], hole[1] - peg[1], 0.0])
            target[2], grip = self.CARRY_HEIGHT, GRIPPER_CLOSE
            if np.linalg.norm((hole - peg)[:2]) < 0.001:
                self.phase = "insert"
        else:  # insert, then hold
            target = hand + np.array([hole[0] - peg[0], hole[1] - peg[1], 0.0])
            target[2], grip = hole[2] + grasp_offset + 0.003, GRIPPER_CLOSE
        step = self.position_step(target, hand)
        if self.phase == "insert":
            step[2] = max(step[2], -0.004)  # slow in the hole
        return np.concatenate([step, [grip]]).astype(np.float32)
