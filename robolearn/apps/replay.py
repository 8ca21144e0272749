"""``robolearn replay``: play a recorded episode back through the same control loop as deployment
and recording (on the twin, in the episode's own scene)."""

from __future__ import annotations

from typing import Any

import numpy as np

from robolearn.data.store import EpisodeStore
from robolearn.envs.actions import DeltaEefAdapter
from robolearn.robots.types import SimulatedRobot
from robolearn.teleop.recorder import ReplaySource


def replay(store_path, episode: int, robot_name: str = "sim", realtime: bool = True,
           settle_s: float = 0.5) -> dict[str, Any]:
    """``robolearn replay``: play episode ``episode`` of a store back through the loop.

    Uses ``action_abs`` (absolute targets, interpolated) when the store has it, else the store's
    relative Lift-convention ``action`` (held per step). On the twin the scene is reset to the
    episode's seed first, so a scripted demonstration replays into the same scene. After the last
    step the final target is held for ``settle_s`` (success is checked until then).

    Returns:
        ``{"episode", "steps", "absolute", "success" (twin only), "final_target_error_m", "loop"}``.

    Raises:
        StoreError: unreadable store, episode out of range, or no replayable action key.
    """
    from robolearn.robots.config import load_robot_config, make_robot
    from robolearn.robots.loop import ControlLoop
    from robolearn.robots.safety import SafetyLayer
    from robolearn.robots.session import ControlSession
    from robolearn.utils.errors import StoreError

    store = EpisodeStore.open(store_path)
    if not 0 <= episode < store.n_episodes:
        raise StoreError(f"{store_path}: no episode {episode} (the store has {store.n_episodes})")
    absolute = "action_abs" in store.keys
    if not absolute and (store.attrs.get("action_space") or {}).get("type") != DeltaEefAdapter.space_type:
        raise StoreError(f"{store_path}: nothing to replay: no 'action_abs' key and 'action' is not an EEF delta pose")
    ep = store.get_episode(episode, ["action_abs" if absolute else "action"])
    actions = ep["action_abs" if absolute else "action"]
    seed = int(store.episode_meta("seed")[episode]) if "seed" in store.meta_keys else None
    step_s = 1.0 / float(store.fps or 20.0)
    rcfg = load_robot_config(robot_name)
    rate = float(rcfg["rate_hz"])
    rb = make_robot(rcfg)
    rb.connect()
    try:
        simulated = isinstance(rb, SimulatedRobot)
        if simulated:
            rb.reset(seed)
        safety = SafetyLayer(rb.limits, rb.capabilities, rb.read_state(), float(rcfg["watchdog_timeout_s"]))
        source = ReplaySource(actions, step_s, absolute)
        ticks = int(round(rate * step_s))
        success = {"any": False}

        def on_slot(k, deadline, state):
            if simulated and k > 0:
                success["any"] = success["any"] or rb.is_success()
            return source.end_time is not None and deadline >= source.end_time + settle_s

        session = ControlSession(rb, safety, source, ticks, on_slot=on_slot)
        stats = ControlLoop(rate, session.step, realtime=realtime).run(
            duration_s=step_s * (len(actions) + 2) + settle_s, stop_when=lambda: session.done, on_start=getattr(rb, "sync", rb.read_state))
        final = rb.read_state()
        err = float(np.linalg.norm(final.eef_pos - actions[-1][:3])) if absolute else None
    finally:
        rb.disconnect()
    return {"store": str(store_path), "episode": episode, "seed": seed, "steps": len(actions), "absolute": absolute,
            "success": success["any"] if simulated else None, "final_target_error_m": err,
            "faults": [f.kind.value for f in safety.faults], "loop": stats.summary()}
