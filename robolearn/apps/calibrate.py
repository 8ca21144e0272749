"""``robolearn calibrate``: calibrate an SO-100/101 arm (follower or leader) on its Feetech bus with
guided prompts, and write its robot config.

The convention is the twin's and the Feetech driver's (:mod:`robolearn.robots.so101_twin`,
``sim/README.md``)::

    q [rad] = direction * (steps - homing_offset) * 2 pi / 4096

with ``q = 0`` the MuJoCo twin's zero pose. The procedure (:func:`calibrate`), torque off on every
servo throughout:

1. **zero pose** → ``homing_offset`` of each joint = its reading there (steps, median of a few reads);
2. per joint, **a slow move in its positive direction** → ``direction`` = the sign of the change
   (a joint that moved less than :data:`MIN_MOVE_STEPS` is refused, named), then **a sweep from stop
   to stop** → the joint's range; the written limits are that range less ``margin_rad`` at each end,
   within the twin's ranges (``sim/so101.xml``, which ``hardware/so101.yaml`` ships as its limits);
3. **gripper closed, then open** → ``gripper: {closed, open}`` (steps).

The output starts from the robot's base config (``hardware/<robot>.yaml``, its other keys and
comments kept) with ``port``, ``calibration``, ``gripper`` and ``limits`` replaced, under a header
comment saying when and how it was made; it is validated as a robot config before it is written
and never replaces an existing file unless ``force``. Prompts go through ``prompt`` (default
:func:`input`), so a test scripts the user; messages through ``say`` (default :func:`print`).
"""

from __future__ import annotations

import datetime as _dt
import glob
import os
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

from robolearn.robots.feetech import STEPS_PER_TURN
from robolearn.utils.errors import ConfigError, DeviceError, RobolearnError

#: A joint must change by at least this many steps (8.8 degrees) when moved in its positive direction.
MIN_MOVE_STEPS = 100
#: The gripper's open and closed readings must be at least this many steps apart.
MIN_GRIPPER_STEPS = 100
#: A sweep must cover at least this much (rad, 11.5 degrees) of a joint's range.
MIN_SWEEP_RAD = 0.2
#: Default distance (rad, 2.9 degrees) the written limits keep from the swept mechanical stops.
DEFAULT_MARGIN_RAD = 0.05
_RAD_PER_STEP = 2 * np.pi / STEPS_PER_TURN

#: The twin's zero pose (sim/so101.xml, sim/README.md), as an owner sets it by hand.
ZERO_POSE = ("the zero pose of the MuJoCo twin (sim/so101.xml): base pan centred so the arm points straight "
             "ahead, upper arm vertical, forearm and gripper horizontal pointing straight ahead, wrist roll "
             "turned so the moving jaw is on top")
#: What each joint's positive direction is on the twin, seen by someone standing behind the base,
#: looking the way the arm points in the zero pose (from the joints' axes in sim/so101.xml).
POSITIVE = {
    "shoulder_pan": "swing the arm to your right, clockwise seen from above",
    "shoulder_lift": "tip the upper arm forward and down, the way the arm points",
    "elbow_flex": "fold the forearm down, the gripper dropping",
    "wrist_flex": "tip the gripper down",
    "wrist_roll": "roll the gripper counterclockwise as you see it from behind",
}


class CalibrationError(RobolearnError):
    """A calibration step the user has to redo (a joint that did not move, a sweep too short) or an
    output file that is already there; the message names the joint or the file."""


def _joint_names(n: int) -> list[str]:
    from robolearn.robots.so101_twin import SO101_JOINTS

    return list(SO101_JOINTS) if n == len(SO101_JOINTS) else [f"joint{k}" for k in range(n)]


def _twin_ranges(cfg: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, str]:
    """The ranges (rad) the written limits are kept within, and where they come from: the SO-101
    model's for a five-joint arm (the SO-100/101 convention), else the base config's limits."""
    n = len(cfg["calibration"])
    names = _joint_names(n)
    if n == 5 and names[0] == "shoulder_pan":
        from robolearn.robots.so101_twin import So101Kinematics

        r = So101Kinematics().joint_range
        return r[:, 0].copy(), r[:, 1].copy(), "sim/so101.xml's ranges"
    lim = cfg["limits"]
    return np.asarray(lim["joint_lower"], float), np.asarray(lim["joint_upper"], float), "the base config's limits"


def default_out(robot: str) -> Path:
    """``hardware/<robot>_calibrated.yaml`` in the shipped hardware folder (so ``--robot
    <robot>_calibrated`` finds it); ``robot`` a name or a YAML path (its stem is used)."""
    from robolearn.utils.paths import hardware_dir

    return hardware_dir() / f"{Path(robot).stem}_calibrated.yaml"


def _check_port(port: str) -> None:
    if port and not port.startswith(("socket:", "rfc2217:", "loop:")) and not os.path.exists(port):
        found = sorted(glob.glob("/dev/ttyACM*") + glob.glob("/dev/ttyUSB*") + glob.glob("/dev/tty.usbmodem*"))
        raise DeviceError(f"port {port}: no such serial port (is the arm's bus adapter plugged in and powered? "
                          f"serial ports here: {found or 'none'})")


class _Sampler:
    """Reads every servo (steps) in a thread every ``period_s`` while the user does something."""

    def __init__(self, arm, period_s: float):
        self.arm, self.period_s = arm, period_s
        self.samples: list[np.ndarray] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="calibrate-sampler")

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.samples.append(self.arm.read_steps())
                self._stop.wait(self.period_s)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread in stop()
            self.error = exc

    def __enter__(self) -> "_Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        if self.error is not None and exc[0] is None:
            raise self.error


def measure(arm, prompt: Callable[[str], str] = input, say: Callable[[str], None] = print,
            margin_rad: float = DEFAULT_MARGIN_RAD, ranges: tuple[np.ndarray, np.ndarray] | None = None,
            sample_period_s: float = 0.01, n_reads: int = 5) -> dict[str, Any]:
    """The guided procedure on a connected, torque-off :class:`~robolearn.robots.feetech.FeetechArm`
    (see the module docstring); nothing is written.

    Args:
        arm: the arm; its calibration entries give the servo ids (their offsets are not used).
        prompt: shows a step's instructions and returns when the user is done (``input``).
        say: prints a progress line.
        margin_rad: how far (rad) the written limits stay inside the swept stops.
        ranges: ``(lower, upper)`` ``(n,)`` rad the limits are kept within (default: none).
        sample_period_s: sampling period (s) of the bus during a sweep.
        n_reads: reads whose median is a static pose's reading.

    Returns:
        ``{"calibration": [{id, homing_offset, direction}] (steps, +-1), "gripper": {id, closed,
        open} (steps) or None, "joint_lower", "joint_upper": (n,) lists in rad, "swept_steps": per
        joint [min, max] steps, "joint_names"}``.

    Raises:
        CalibrationError: a joint that did not move (named, with a servo that moved instead if
            one did: swapped ids), readings that wrap past 4095 -> 0 in a joint's range, a sweep
            shorter than :data:`MIN_SWEEP_RAD` or not passing the zero pose, a gripper that did
            not move.
        ConnectionError: the bus stopped answering.
    """
    n = len(arm.joints)
    names = list(getattr(arm, "joint_names", None) or _joint_names(n))
    ids = [j.id for j in arm.joints]
    lo_r, hi_r = ranges if ranges is not None else (np.full(n, -np.inf), np.full(n, np.inf))

    def read() -> np.ndarray:
        return np.median(np.stack([arm.read_steps() for _ in range(n_reads)]), axis=0)

    prompt(f"Step 1: put the arm in {ZERO_POSE}. Hold it there and press Enter.")
    zero = np.round(read()).astype(int)
    offsets = [int(v) for v in zero[:n]]
    say("zero pose readings (steps): " + ", ".join(f"{nm} {v}" for nm, v in zip(names, offsets)))
    directions, lower, upper, swept = [], [], [], []
    for k, name in enumerate(names):
        before = read()
        how = POSITIVE.get(name, "turn it the way the twin's joint turns positive")
        prompt(f"Step 2.{k + 1}a: {name} (servo {ids[k]}): move it slowly in its positive direction "
               f"({how}) by 20 degrees or more, then press Enter.")
        after = read()
        delta = after - before
        d = float(delta[k])
        if abs(d) > STEPS_PER_TURN / 2:
            raise CalibrationError(f"{name} (servo {ids[k]}): its reading jumped {before[k]:.0f} -> {after[k]:.0f} "
                                   "steps, across the servo's 4095 -> 0 wrap; this convention needs the joint's "
                                   "range inside one turn of readings (re-seat the servo horn)")
        if abs(d) < MIN_MOVE_STEPS:
            moved = [(abs(float(delta[i])), i) for i in range(len(arm.ids)) if i != k and abs(delta[i]) >= MIN_MOVE_STEPS]
            hint = ""
            if moved:
                _, i = max(moved)
                hint = (f"; servo {arm.ids[i]} ({arm.servo_label(arm.ids[i])}) moved {delta[i]:+.0f} steps instead: "
                        "are two servo ids swapped, or was the wrong joint moved?")
            raise CalibrationError(f"{name} (servo {ids[k]}) did not move: {d:+.0f} steps, less than {MIN_MOVE_STEPS} "
                                   f"({np.degrees(MIN_MOVE_STEPS * _RAD_PER_STEP):.0f} degrees){hint}. Run the "
                                   "calibration again and move it further")
        sign = 1 if d > 0 else -1
        directions.append(sign)
        with _Sampler(arm, sample_period_s) as sampler:
            prompt(f"Step 2.{k + 1}b: {name}: sweep it slowly from one end stop to the other and back "
                   "(its full range), then press Enter.")
        col = np.array([before[k], after[k]] + [s[k] for s in sampler.samples] + [read()[k], zero[k]], float)
        trace = np.array([s[k] for s in sampler.samples], float)
        if trace.size > 1 and np.max(np.abs(np.diff(trace))) > STEPS_PER_TURN / 2:
            raise CalibrationError(f"{name} (servo {ids[k]}): its readings wrap past 4095 -> 0 inside its range; "
                                   "this convention needs the range inside one turn of readings (re-seat the "
                                   "servo horn)")
        q = sign * (col - offsets[k]) * _RAD_PER_STEP
        q_lo, q_hi = float(q.min()), float(q.max())
        if q_hi - q_lo < MIN_SWEEP_RAD:
            raise CalibrationError(f"{name} (servo {ids[k]}): the sweep covered only {q_hi - q_lo:.3f} rad "
                                   f"(at least {MIN_SWEEP_RAD} needed): sweep it from end stop to end stop")
        low, up = max(float(lo_r[k]), q_lo + margin_rad), min(float(hi_r[k]), q_hi - margin_rad)
        if not low < 0.0 < up:
            raise CalibrationError(f"{name} (servo {ids[k]}): its limits [{low:.3f}, {up:.3f}] rad (the sweep "
                                   f"[{q_lo:.3f}, {q_hi:.3f}] less {margin_rad} rad) do not contain the zero pose: "
                                   "sweep it past the zero pose to both end stops")
        lower.append(round(low, 5))
        upper.append(round(up, 5))
        swept.append([int(col.min()), int(col.max())])
        say(f"{name}: direction {sign:+d}, range [{q_lo:+.3f}, {q_hi:+.3f}] rad, limits [{low:+.3f}, {up:+.3f}] rad")
    gripper = None
    if arm.gripper:
        gid = arm.gripper["id"]
        prompt(f"Step 3a: close the gripper fully (servo {gid}) and press Enter.")
        closed = int(round(read()[-1]))
        prompt(f"Step 3b: open the gripper fully (servo {gid}) and press Enter.")
        opened = int(round(read()[-1]))
        if abs(opened - closed) < MIN_GRIPPER_STEPS:
            raise CalibrationError(f"gripper (servo {gid}) did not move: closed {closed}, open {opened} steps "
                                   f"(at least {MIN_GRIPPER_STEPS} apart needed)")
        gripper = {"id": gid, "closed": closed, "open": opened}
        say(f"gripper: closed {closed}, open {opened} steps")
    calibration = [{"id": i, "homing_offset": o, "direction": s} for i, o, s in zip(ids, offsets, directions)]
    return {"calibration": calibration, "gripper": gripper, "joint_lower": lower, "joint_upper": upper,
            "swept_steps": swept, "joint_names": names}


# ------------------------------------------------------------------ writing the config


def _blocks(text: str) -> list[tuple[str | None, list[str]]]:
    """Split YAML text into top-level blocks: ``(key, lines)``, a key's block running to the next
    line at column 0 (another key or a comment); ``(None, lines)`` for the comments/blank lines
    between."""
    import re

    out: list[tuple[str | None, list[str]]] = []
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z_][\w-]*)\s*:", line)
        if m:
            out.append((m.group(1), [line]))
        elif line[:1] in ("", " ", "\t", "-") and line.strip() and out and out[-1][0] is not None:
            out[-1][1].append(line)
        elif out and out[-1][0] is None:
            out[-1][1].append(line)
        else:
            out.append((None, [line]))
    return out


def _flow(values) -> str:
    return "[" + ", ".join(repr(round(float(v), 5)) if isinstance(v, float) else str(v) for v in values) + "]"


def render_config(base_text: str, base_raw: dict[str, Any], result: dict[str, Any], port: str, header: list[str],
                  margin_rad: float, ranges_source: str) -> str:
    """The calibrated config's YAML text: ``base_text`` with its ``port``, ``calibration``,
    ``gripper`` and ``limits`` blocks replaced from ``result`` (:func:`measure`'s), other blocks and
    comments kept, ``header`` (comment lines) first."""
    names = result["joint_names"]
    cal = ["calibration:"] + [f"  - {{id: {c['id']}, homing_offset: {c['homing_offset']}, direction: {c['direction']}}}"
                              f"    # {nm} (steps)" for c, nm in zip(result["calibration"], names)]
    limits = dict(base_raw.get("limits") or {})
    limits["joint_lower"], limits["joint_upper"] = result["joint_lower"], result["joint_upper"]
    lim = [f"limits:                                           # joints: swept range less {margin_rad} rad, "
           f"within {ranges_source}"]
    for key, v in limits.items():
        val = _flow(v) if isinstance(v, (list, tuple)) else str(v)
        unit = "   # rad" if key in ("joint_lower", "joint_upper") else ""
        lim.append(f"  {key}: {val}{unit}")
    new = {"port": [f"port: {port}"], "calibration": cal, "limits": lim}
    g = result["gripper"]
    if g is not None:
        new["gripper"] = [f"gripper: {{id: {g['id']}, closed: {g['closed']}, open: {g['open']}}}        # steps"]
    lines = list(header)
    done = set()
    for key, block in _blocks(base_text):
        if key in new:
            lines += new[key]
            done.add(key)
        else:
            lines += block
    for key, block in new.items():
        if key not in done:
            lines += block
    return "\n".join(lines) + "\n"


def calibrate(robot: str = "so101", port: str | None = None, out: str | os.PathLike | None = None,
              force: bool = False, prompt: Callable[[str], str] | None = None, say: Callable[[str], None] = print,
              margin_rad: float = DEFAULT_MARGIN_RAD, sample_period_s: float = 0.01) -> dict[str, Any]:
    """``robolearn calibrate --robot so101 --port /dev/ttyACM0 [--out FILE] [--force]``.

    Opens the Feetech bus of ``robot``'s config (``hardware/<robot>.yaml`` or a YAML path) on
    ``port`` (default: the config's), switches torque off on every servo, runs :func:`measure`,
    closes the bus (torque stays off) and writes the calibrated config (:func:`render_config`).

    Args:
        robot: a ``driver: feetech`` robot config: ``so101``, ``so101_leader``, ``so100`` or a path.
        port: the bus's serial port, e.g. ``/dev/ttyACM0``.
        out: output YAML (default :func:`default_out`: ``hardware/<robot>_calibrated.yaml``).
        force: replace ``out`` if it exists.
        prompt: shows a step's instructions, returns when the user is done (default: :func:`input`,
            looked up at call time).
        say, margin_rad, sample_period_s: see :func:`measure`.

    Returns:
        :func:`measure`'s dict plus ``"path"`` (the written file) and ``"port"``.

    Raises:
        ConfigError: ``robot`` is not a Feetech config (or any invalid key in it); the output would
            not be a valid config.
        CalibrationError: ``out`` exists and ``force`` is not set (checked before the bus is
            touched), or a step :func:`measure` refuses.
        DeviceError: the port does not exist or cannot be opened, or a servo does not answer (its
            id and joint named), or the bus stopped answering.
    """
    import yaml

    from robolearn.robots.config import load_robot_config, validate_robot_config
    from robolearn.robots.feetech import FeetechArm

    if prompt is None:
        def prompt(text: str) -> str:
            try:
                return input(text + " ")
            except EOFError:
                raise CalibrationError("calibrate needs a terminal: standard input closed at a prompt") from None
    cfg = load_robot_config(robot)
    if cfg["driver"] != "feetech":
        raise ConfigError(f"{cfg['_path']}: driver: {cfg['driver']!r}: calibrate needs a Feetech arm's config "
                          "(so101, so101_leader, so100, or a YAML with driver: feetech)")
    out = Path(out) if out is not None else default_out(robot)
    if out.exists() and not force:
        raise CalibrationError(f"{out} already exists; pass --force to replace it, or --out another file")
    port = port or cfg["port"]
    _check_port(port)
    lower_r, upper_r, ranges_source = _twin_ranges(cfg)
    arm = FeetechArm.from_config(cfg, port=port, torque_on_connect=False, kinematics=None)
    arm.joint_names = tuple(_joint_names(len(arm.joints)))
    prompt(f"Calibrating {Path(cfg['_path']).stem} on {port}: the servos' torque goes off now and stays off "
           "(a follower arm falls without it): hold the arm, then press Enter.")
    try:
        arm.connect()
    except ConnectionError as exc:
        raise DeviceError(str(exc)) from None
    try:
        say(f"torque off on servos {arm.ids}")
        result = measure(arm, prompt=prompt, say=say, margin_rad=margin_rad, ranges=(lower_r, upper_r),
                         sample_period_s=sample_period_s)
    except ConnectionError as exc:
        raise DeviceError(f"{port}: {exc}") from None
    finally:
        arm.disconnect()
    base_path = Path(cfg["_path"])
    base_text = base_path.read_text()
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    from robolearn import __version__

    header = [f"# Calibrated {now} by `robolearn calibrate --robot {robot} --port {port}` (robolearn {__version__}),",
              f"# from {base_path}: homing_offset = each servo's reading in the twin's zero pose, direction = the",
              "# sign of its change when the joint was moved positive (q = direction * (steps - homing_offset) *",
              f"# 2 pi / 4096 rad), joint limits = each joint's swept range less {margin_rad} rad, within",
              f"# {ranges_source}; gripper = the jaw servo's readings closed and open (steps).",
              "# Swept ranges (steps, min max): " + ", ".join(f"{nm} {a}..{b}" for nm, (a, b) in
                                                                zip(result["joint_names"], result["swept_steps"]))]
    text = render_config(base_text, yaml.safe_load(base_text) or {}, result, port, header, margin_rad, ranges_source)
    validate_robot_config(yaml.safe_load(text), str(out))  # a config the driver will load, or nothing written
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    if out.exists() and not force:  # appeared while the user was calibrating
        tmp.unlink()
        raise CalibrationError(f"{out} already exists; pass --force to replace it, or --out another file")
    os.replace(tmp, out)
    say(f"wrote {out}; servo torque is off (support a follower arm before its next use)")
    return {**result, "path": str(out), "port": port}
