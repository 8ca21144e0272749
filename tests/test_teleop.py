"""Teleop devices driven by scripted events (no hardware, no display), the record loop writing
committed episodes on the MuJoCo twin, and replay of a recorded episode."""

from types import SimpleNamespace

import numpy as np
import pytest

from robolearn.data.store import EpisodeStore
from robolearn.robots.loop import ControlLoop, ManualClock
from robolearn.robots.safety import SafetyLayer
from robolearn.robots.session import ControlSession
from robolearn.robots.twin import MujocoTwin
from robolearn.teleop.devices import GamepadDevice, KeyboardDevice, SpaceMouseDevice, make_device
from robolearn.apps.record import open_record_store
from robolearn.teleop.recorder import Recorder, ReplaySource, TeleopSource



class Script:
    """Keyboard backend: characters to 'type' at given times (s)."""

    def __init__(self, clock, schedule):
        self.clock, self.schedule = clock, sorted(schedule)

    def __call__(self):
        out = ""
        while self.schedule and self.schedule[0][0] <= self.clock():
            out += self.schedule.pop(0)[1]
        return out


def test_keyboard_maps_keys_to_twist_gripper_and_events():
    clock = ManualClock()
    kb = KeyboardDevice(speed=0.2, rot_speed=0.5, hold_s=0.1, backend=Script(clock, [(0.0, "iu y"), (0.0, "c")]),
                        clock=clock)
    inp = kb.read()
    np.testing.assert_allclose(inp.linear, [0.2, 0.0, 0.2])
    np.testing.assert_allclose(inp.angular, [0.0, 0.0, 0.5])
    assert inp.gripper == 0.0 and inp.events == ("start",)
    clock.t = 0.2  # keys released (no repeat within hold_s)
    inp = kb.read()
    assert not inp.linear.any() and not inp.angular.any() and inp.gripper == 0.0 and inp.events == ()


def test_spacemouse_and_gamepad_map_axes_and_button_edges():
    states = iter([SimpleNamespace(x=1.0, y=0.0, z=-0.5, roll=0.0, pitch=0.0, yaw=0.02, buttons=[1, 1]),
                   SimpleNamespace(x=0.0, y=0.0, z=0.0, roll=0.0, pitch=0.0, yaw=0.0, buttons=[1, 0]),
                   SimpleNamespace(x=0.0, y=0.0, z=0.0, roll=0.0, pitch=0.0, yaw=0.0, buttons=[0, 1])])
    sm = SpaceMouseDevice(speed=0.1, deadzone=0.05, backend=lambda: next(states))
    a, b, c = sm.read(), sm.read(), sm.read()
    np.testing.assert_allclose(a.linear, [0.1, 0.0, -0.1 * (0.45 / 0.95)])
    assert a.angular[2] == 0.0  # inside the dead zone
    assert (a.gripper, a.events) == (0.0, ("start",))
    assert (b.gripper, b.events) == (0.0, ())          # held button: no new edge
    assert c.events == ("stop",)
    pads = iter([([0.0, -1.0, 0.0, 0.0, 0.0], [0, 0, 0, 0, 0, 0, 0, 1]),
                 ([0.0, 0.0, 0.0, 0.0, 0.0], [1, 1, 0, 0, 0, 0, 1, 0])])  # A, B, Back
    gp = GamepadDevice(speed=0.1, backend=lambda: next(pads))
    a, b = gp.read(), gp.read()
    np.testing.assert_allclose(a.linear, [0.1, 0.0, 0.0])  # left stick up: +x
    assert a.events == ("start",) and b.events == ("discard", "quit") and b.gripper == 0.0
    with pytest.raises(ValueError, match="unknown teleop device"):
        make_device("joystick9000")


@pytest.fixture(scope="module")
def twin_clock():
    clock = ManualClock()
    tw = MujocoTwin(clock=clock)
    tw.connect()
    yield tw, clock
    tw.close()


def camera(clock):
    """A synthetic 8x6 RGB camera whose pixels encode the time (ms)."""
    return lambda: np.full((6, 8, 3), int(clock() * 1000) % 256, np.uint8)


def run_session(tw, clock, schedule, store, seconds):
    tw.reset(0)
    kb = KeyboardDevice(speed=0.1, backend=Script(clock, schedule), clock=clock)
    safety = SafetyLayer(tw.limits, tw.capabilities, tw.read_state(), watchdog_timeout=0.1)
    source = TeleopSource(kb, clock=clock)
    recorder = Recorder(store, tw, source, safety, seed_start=10, cameras={"wrist": camera(clock)})
    session = ControlSession(tw, safety, source, ticks_per_slot=25, on_slot=recorder.on_slot, clock=clock)
    ControlLoop(500, session.step, spin_s=0, clock=clock, sleep=clock.sleep).run(
        duration_s=seconds, stop_when=lambda: session.done)
    return recorder


def test_record_commits_stopped_episodes_and_drops_discarded_ones(tmp_path, twin_clock):
    tw, clock = twin_clock
    store = open_record_store(tmp_path / "teleop.zarr", tw, fps=20, append=False, task="lift",
                              cameras={"wrist": camera(clock)})
    up = [(0.1 + 0.02 * i, "u") for i in range(25)]  # hold "u" (+z) for 0.5 s
    schedule = [(0.05, "c"), *up, (0.6, " "), (0.8, "s"),   # episode 1: up, close gripper, stop
                (0.9, "c"), (1.2, "\x7f"),                   # episode 2: discarded
                (1.3, "c"), (1.5, "q")]                      # episode 3: quit while recording
    rec = run_session(tw, clock, schedule, store, seconds=3.0)
    assert rec.quit and (rec.committed, rec.discarded) == (1, 2)
    store.close()
    s = EpisodeStore.open(tmp_path / "teleop.zarr")
    assert s.n_episodes == 1 and s.episode_meta("seed").tolist() == [10]
    ep = s.get_episode(0)
    assert 14 <= len(ep["action"]) <= 16  # 0.05 s .. 0.8 s at 20 Hz
    assert set(ep) >= {"robot0_eef_pos", "object", "action", "action_abs", "timestamp", "wrist_image"}
    assert ep["wrist_image"].shape == (len(ep["action"]), 6, 8, 3) and ep["wrist_image"].dtype == np.uint8
    # each frame is the one taken at its step (pixel = step time in ms, mod 256)
    np.testing.assert_array_equal(ep["wrist_image"][:, 0, 0, 0], (np.round(ep["timestamp"][:, 0] * 1000) % 256))
    assert s.key_info("wrist_image").units == "pixel"
    np.testing.assert_allclose(np.diff(ep["timestamp"][:, 0]), 0.05, atol=1e-9)
    z = ep["action_abs"][:, 2]
    assert z[-1] - z[0] == pytest.approx(0.058, abs=0.003)  # "u" active 0.10 .. 0.68 s at 0.1 m/s
    assert ep["action"][-1, 6] == 1.0 and ep["action"][0, 6] == -1.0  # closed at the end, open at the start
    assert ep["robot0_eef_pos"][-1, 2] > ep["robot0_eef_pos"][0, 2] + 0.03  # the arm followed

    # Replay it: absolute targets interpolated; the arm ends where the recorded target ended.
    tw.reset(10)
    safety = SafetyLayer(tw.limits, tw.capabilities, tw.read_state(), watchdog_timeout=0.1)
    source = ReplaySource(ep["action_abs"], 0.05, absolute=True)
    session = ControlSession(tw, safety, source, 25, clock=clock)
    ControlLoop(500, session.step, spin_s=0, clock=clock, sleep=clock.sleep).run(duration_s=len(z) * 0.05 + 0.3)
    assert np.linalg.norm(tw.read_state().eef_pos - ep["action_abs"][-1, :3]) < 0.01


def test_opencv_camera_reads_newest_frames_without_blocking(tmp_path):
    import cv2

    from robolearn.teleop.cameras import OpenCVCamera
    from robolearn.utils.errors import DeviceError

    path = str(tmp_path / "cam.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 30, (32, 24))
    for i in range(10):
        writer.write(np.full((24, 32, 3), (0, 0, 200), np.uint8))  # BGR: red
    writer.release()
    cam = OpenCVCamera(path, loop=True)
    try:
        frame, t = cam.read()
        assert frame.shape == (24, 32, 3) and frame.dtype == np.uint8 and t > 0
        assert frame[..., 0].mean() > 150 and frame[..., 2].mean() < 50  # converted to RGB
    finally:
        cam.close()
    cam = OpenCVCamera(path, loop=True, image_size=(12, 16))  # (height, width): a policy's input size
    try:
        frame, _ = cam.read()
        assert frame.shape == (12, 16, 3) and frame.dtype == np.uint8
        assert frame[..., 0].mean() > 150 and frame[..., 2].mean() < 50  # resized after the BGR -> RGB
    finally:
        cam.close()
    with pytest.raises(DeviceError, match="cannot be opened"):
        OpenCVCamera(str(tmp_path / "missing.avi"))
    with pytest.raises(ValueError, match=r"image_size must be \(height, width\) >= 1 px, got \(0, 16\)"):
        OpenCVCamera(path, image_size=(0, 16))


def test_recorder_commits_in_a_thread_without_blocking_the_loop_and_raises_its_error_at_close():
    import threading

    from robolearn.utils.errors import StoreError

    release, calls = threading.Event(), []

    class SlowStore:  # commit_episode blocks until released, as a long image encoding would
        episode_in_progress = 3

        def commit_episode(self, meta):
            release.wait(10)
            calls.append(meta)
            if len(calls) == 2:
                raise StoreError("disk full")

    source = SimpleNamespace(events=["stop"], target=None)
    rec = Recorder(SlowStore(), object(), source, safety=None)
    rec.recording = True
    assert rec.on_slot(0, 0.0, None) is False  # returns while the commit is still blocked
    assert rec.committed == 1 and not rec.recording and calls == []
    assert rec.on_slot(1, 0.05, None) is False and calls == []  # no event: the loop goes on
    release.set()
    source.events = ["start"]
    rec.on_slot(2, 0.10, None)  # an event waits for the commit first
    assert calls == [{"length": 3, "duration_s": calls[0]["duration_s"]}] and rec.recording
    source.events = ["stop"]
    rec.on_slot(3, 0.15, None)
    with pytest.raises(StoreError, match="disk full"):
        rec.close()
    rec.close()  # raised once; nothing left to wait for
