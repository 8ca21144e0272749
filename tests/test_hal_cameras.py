"""Cameras in the HAL for deployment: newest-frame sources beside the loop, the twin's rendered
cameras (the eval environment's frames), observation ages, and deploy of an image policy."""

import multiprocessing
import re
import threading
import time

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from robolearn.robots.cameras import StateTap, ThreadedFrameSource, age_summary, wait_frames
from robolearn.utils.paths import hardware_dir
from robolearn.utils.errors import ConfigError

CAMERAS = ("agentview", "robot0_eye_in_hand")  # configs/task/lift_image.yaml
IMAGE_OBS = {"robot0_eef_pos": (3,), "robot0_eef_quat": (4,), "robot0_gripper_qpos": (2,),
             "agentview_image": (84, 84, 3), "robot0_eye_in_hand_image": (84, 84, 3)}


class CountingSource(ThreadedFrameSource):
    """Frames ``k`` (every pixel = k), captured at ``fps``; with a ``gate``, every capture after
    the first waits until the gate opens (a renderer that hangs)."""

    def __init__(self, fps: float, gate: threading.Event | None = None):
        super().__init__("fake", fps)
        self.gate = gate
        self.k = 0

    def capture(self):
        if self.gate is not None and self.k >= 1:
            self.gate.wait()
        self.k += 1
        return np.full((4, 4, 3), self.k % 256, np.uint8), time.monotonic()


def tiny_image_checkpoint(path, max_steps: int = 30):
    """A small untrained image diffusion policy with the lift_image task's keys, saved as a checkpoint."""
    from robolearn.data.normalizer import compute_stats
    from robolearn.policies import build_policy
    from robolearn.train.checkpoint import save_checkpoint
    from robolearn.utils.config import load_config

    cfg = load_config(["task=lift_image", "policy=diffusion_image", f"task.max_episode_steps={max_steps}",
                       "policy.down_dims=[16,32]", "policy.horizon=8", "policy.n_action_steps=4",
                       "policy.n_groups=4", "policy.step_embed_dim=16", "policy.num_inference_steps=2"])
    rng = np.random.default_rng(0)
    low = {k: s for k, s in IMAGE_OBS.items() if len(s) == 1}
    stats = compute_stats({**{k: rng.normal(size=(20, *s)) for k, s in low.items()},
                           "action": rng.uniform(-0.05, 0.05, size=(20, 7))})
    torch.manual_seed(0)
    policy = build_policy(OmegaConf.to_container(cfg.policy, resolve=True), IMAGE_OBS, 7, stats=stats)
    return save_checkpoint(path, policy, cfg, str(cfg.policy.name), stats=stats)


def rig(tmp_path, cameras, name="rig.yaml", base="sim"):
    """hardware/<base>.yaml with its ``cameras`` section replaced (``None``: removed), saved as ``name``."""
    cfg = OmegaConf.to_container(OmegaConf.load(hardware_dir() / f"{base}.yaml"))
    cfg.pop("cameras", None)
    if cameras is not None:
        cfg["cameras"] = cameras
    path = tmp_path / name
    OmegaConf.save(OmegaConf.create(cfg), path)
    return str(path)


def write_video(path, color_bgr, size=(84, 84), frames=10):
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20, size)
    for _ in range(frames):
        writer.write(np.full((size[1], size[0], 3), color_bgr, np.uint8))
    writer.release()
    return str(path)


# ------------------------------------------------------------------ frame sources


def test_frames_arrive_with_increasing_timestamps_at_the_configured_rate():
    cam = CountingSource(fps=50).start()
    try:
        wait_frames({"fake": cam}, timeout_s=5)
        time.sleep(0.6)
    finally:
        cam.close()
    ts = np.asarray(cam.timestamps)
    assert len(ts) >= 5 and np.all(np.diff(ts) > 0)
    # absolute deadlines: never more frames than the rate allows over the span, and about 1/fps apart
    assert len(ts) - 1 <= (ts[-1] - ts[0]) * 50 + 1
    assert np.median(np.diff(ts)) == pytest.approx(1 / 50, rel=0.5)


def test_the_control_loop_never_waits_for_a_hanging_camera():
    from robolearn.robots.loop import ControlLoop

    gate = threading.Event()
    cam = CountingSource(fps=100, gate=gate).start()
    seen = []
    try:
        wait_frames({"fake": cam}, timeout_s=5)  # frame 1 is there; the next capture hangs on the gate

        def step(k, deadline):
            frame, t = cam.read()
            seen.append(int(frame[0, 0, 0]))

        stats = ControlLoop(200, step).run(max_steps=100)
        hung = not gate.is_set() and cam.n_frames == 1
    finally:
        gate.set()
        cam.close()
    # every period ran while the camera delivered nothing new: reads took the newest frame, never waited
    assert stats.steps == 100 and hung and set(seen) == {1}


def test_state_tap_copies_only_when_asked_and_never_shares_arrays():
    import mujoco

    model = mujoco.MjModel.from_xml_string("<mujoco><worldbody><body><freejoint/><geom size='.1'/></body></worldbody></mujoco>")
    data = mujoco.MjData(model)
    tap = StateTap(data, clock=lambda: 1.5)
    tap.serve()
    assert tap.latest() is None and tap.n_served == 0  # nobody asked: no copy
    tap.request()
    data.qpos[0] = 0.25
    tap.serve()
    snap = tap.latest()
    assert snap.seq == 1 and snap.t == 1.5 and snap.arrays["qpos"][0] == 0.25
    data.qpos[0] = 0.5
    assert snap.arrays["qpos"][0] == 0.25  # a copy, not a view of the owner's data
    tap.serve()
    assert tap.latest() is snap  # served once per request
    assert tap.wait_newer(1, timeout_s=0.01) is None and tap.wait_newer(0, timeout_s=0.01) is snap


def test_age_summary_reports_the_oldest_frame_per_chunk():
    out = age_summary([{"a": 0.010, "b": 0.030}, {"a": 0.020, "b": 0.010}])
    assert out["chunks"] == 2 and out["max"] == pytest.approx(30.0) and out["p50"] == pytest.approx(25.0)
    assert out["per_camera"]["a"]["max"] == pytest.approx(20.0)
    assert age_summary([]) == {}


# ------------------------------------------------------------------ the twin's cameras


def test_twin_frames_equal_the_eval_envs_frames_for_the_same_state():
    """Same camera, size, orientation and dtype as what the policy saw in training and eval."""
    import mujoco

    from robolearn.envs import make_env
    from robolearn.robots.config import load_robot_config, make_robot
    from robolearn.teleop.cameras import make_cameras
    from robolearn.utils.config import load_config

    env = make_env(load_config(["task=lift_image"]).task)
    rcfg = load_robot_config("sim")
    twin = make_robot(rcfg)
    cams = make_cameras(rcfg["cameras"], rcfg["_path"], robot=twin, names=list(CAMERAS))
    try:
        obs, _ = env.reset(seed=7)
        t0 = time.monotonic()
        twin.reset(7)
        first = wait_frames(cams, after=t0)
        for name in CAMERAS:
            frame, ref = first[name][0], obs[f"{name}_image"]
            assert frame.dtype == ref.dtype == np.uint8 and frame.shape == ref.shape == (84, 84, 3)
            np.testing.assert_array_equal(frame, ref)
        rng = np.random.default_rng(0)
        for _ in range(6):  # move the arm in the eval env, then give the twin that state
            env.step(rng.uniform(-1, 1, 7) * env.action_space.high)
        mujoco.mj_forward(env.model, env.data)
        ref = env.cameras.obs(env.model, env.data)
        data = twin.camera_state()[1]
        for f in ("qpos", "qvel"):
            getattr(data, f)[:] = getattr(env.data, f)
        t1 = time.monotonic()
        twin.publish_state()
        moved = wait_frames(cams, after=t1)
        for name in CAMERAS:
            np.testing.assert_array_equal(moved[name][0], ref[f"{name}_image"])
        assert not np.array_equal(moved["robot0_eye_in_hand"][0], first["robot0_eye_in_hand"][0])
    finally:
        for cam in cams.values():
            cam.close()
        twin.close()
        env.close()


def _fake_camera_server(records: list[bytes]):
    """A localhost server that sends ``records`` at once to its one client, then holds the link open."""
    import socket

    srv = socket.create_server(("127.0.0.1", 0))
    held = []

    def run():
        conn, _ = srv.accept()
        conn.sendall(b"".join(records))
        held.append(conn)
    threading.Thread(target=run, daemon=True).start()
    return srv, held


def test_socket_camera_keeps_the_newest_of_a_backlog_and_raises_the_servers_error():
    from robolearn.robots.socket_twin import _FRAME_HEADER, SocketCamera
    from robolearn.utils.errors import DeviceError

    frames = [(10.0 + k, np.full((2, 3, 3), k, np.uint8)) for k in range(3)]
    srv, held = _fake_camera_server([_FRAME_HEADER.pack(t, 2, 3) + f.tobytes() for t, f in frames])
    cam = SocketCamera("top", srv.getsockname()[1], width=3, height=2).start()
    try:
        got = wait_frames({"top": cam}, timeout_s=5)["top"]
        assert got[1] == 12.0 and (got[0] == 2).all() and got[0].shape == (2, 3, 3)  # the backlog's newest
        time.sleep(0.3)
        assert cam.n_frames == 1 and cam.error is None  # backlogged frames are skipped, not published late
    finally:
        cam.close()
        srv.close()
    msg = b"RenderError: no OpenGL context"
    srv, held = _fake_camera_server([_FRAME_HEADER.pack(0.0, 0, len(msg)) + msg])
    cam = SocketCamera("top", srv.getsockname()[1], width=3, height=2).start()
    try:
        with pytest.raises(DeviceError, match=r"camera 'top' failed: ConnectionError: camera 'top': the twin server "
                                              r"cannot render it: RenderError: no OpenGL context"):
            wait_frames({"top": cam}, timeout_s=5)
    finally:
        cam.close()
        srv.close()


def test_socket_twin_streams_the_eval_envs_frames_from_its_server():
    """The twin in its own process renders its cameras there and streams them: after a seeded reset
    the frames are the eval environment's for that seed (the server keeps stepping, holding the arm,
    so a frame may be a few physics steps later: compared against another seed's scene)."""
    from robolearn.envs import make_env
    from robolearn.robots.config import load_robot_config, make_robot
    from robolearn.robots.socket_twin import SocketCamera
    from robolearn.teleop.cameras import make_cameras
    from robolearn.utils.config import load_config

    env = make_env(load_config(["task=lift_image"]).task)
    refs = {seed: env.reset(seed=seed)[0] for seed in (3, 4)}
    env.close()
    rcfg = load_robot_config("sim_socket")
    twin = make_robot(rcfg)
    twin.connect()
    cams = {}
    try:
        cams = make_cameras(rcfg["cameras"], rcfg["_path"], robot=twin, names=list(CAMERAS))
        assert all(isinstance(c, SocketCamera) for c in cams.values())
        with pytest.raises(ValueError, match=r"'nocam' is not a camera of the twin's model; it has \[.*'agentview'"):
            twin.make_camera("x", "nocam", 84, 84, 20)
        for seed, other in ((3, 4), (4, 3)):
            t0 = time.monotonic()
            twin.reset(seed)
            assert t0 < twin.reset_time < time.monotonic()
            frames = wait_frames(cams, after=twin.reset_time)  # frames stamped earlier show the last scene
            for name in CAMERAS:
                frame, t = frames[name]
                assert frame.dtype == np.uint8 and frame.shape == (84, 84, 3) and t <= time.monotonic()
                err = np.abs(frame.astype(float) - refs[seed][f"{name}_image"]).mean()
                assert err < 1.0, (name, seed, err)  # pixels of 0..255
                far = np.abs(frame.astype(float) - refs[other][f"{name}_image"]).mean()
                if name == "agentview":  # the cube moves between seeds; the wrist view may not show it
                    assert far > 3 * max(err, 0.1), (seed, err, far)
        n0 = {name: cam.n_frames for name, cam in cams.items()}
        deadline = time.monotonic() + 5.0  # 20 fps asked: 3 new frames each, on however loaded cores
        while time.monotonic() < deadline and not all(cams[n].n_frames - n0[n] >= 3 for n in CAMERAS):
            time.sleep(0.05)
        assert all(cams[n].n_frames - n0[n] >= 3 for n in CAMERAS)
    finally:
        for cam in cams.values():
            cam.close()
        twin.disconnect()


# ------------------------------------------------------------------ config errors


@pytest.mark.parametrize("base, cameras, message", [
    ("sim", {"agentview": {"source": 0, "camera": "agentview", "width": 84, "height": 84, "fps": 20}},
     r"cameras\.agentview: give exactly one of 'source' .* got both"),
    ("sim", {"agentview": {"width": 84}}, r"cameras\.agentview: give exactly one of .* got neither"),
    ("sim", {"agentview": {"camera": "agentview", "width": 84, "height": 84}},
     r"cameras\.agentview: a rendered camera needs \['fps'\]"),
    ("sim", {"agentview": {"camera": "agentview", "width": 84, "height": 84, "fps": 20, "loop": True}},
     r"cameras\.agentview\.loop: only a video file"),
    ("ur5e", {"agentview": {"camera": "agentview", "width": 84, "height": 84, "fps": 20}},
     r"cameras\.agentview\.camera: rendered cameras need the MuJoCo twin .* driver 'ur_rtde'"),
    ("so101", {"top": {"camera": "top", "width": 84, "height": 84, "fps": 20}},
     r"cameras\.top\.camera: rendered cameras need the MuJoCo twin .* driver 'feetech'"),
    ("sim", {"agentview": {"camera": "agentview", "width": 84, "height": 84, "fps": 20, "image_size": [64, 64]}},
     r"cameras\.agentview\.image_size: a rendered camera renders at width x height"),
    ("so101", {"top": {"source": 0, "width": 640, "height": 480, "image_size": [96]}},
     r"cameras\.top\.image_size: must be \[height, width\] in px, each an integer >= 1, got \[96\]"),
])
def test_camera_entries_are_checked_at_load(tmp_path, base, cameras, message):
    from robolearn.robots.config import load_robot_config

    path = rig(tmp_path, cameras, base=base)
    with pytest.raises(ConfigError, match=re.escape(path) + ": " + message):
        load_robot_config(path)


@pytest.mark.parametrize("base", ["sim", "sim_socket"])
def test_a_bad_camera_name_is_a_config_error_naming_the_file_and_key(tmp_path, base):
    """Also over the socket, where the twin's server process was started to render: none is left."""
    from robolearn.apps.deploy import PolicyStack

    ckpt = tiny_image_checkpoint(tmp_path / "ckpt")
    path = rig(tmp_path, {"agentview": {"camera": "agentvew", "width": 84, "height": 84, "fps": 20},
                          "robot0_eye_in_hand": {"camera": "robot0_eye_in_hand", "width": 84, "height": 84, "fps": 20}},
               base=base)
    before = set(multiprocessing.active_children())
    with pytest.raises(ConfigError, match=re.escape(path) + r": cameras\.agentview\.camera: 'agentvew' is not a "
                                          r"camera of the twin's model; it has \[.*'agentview'"):
        PolicyStack(ckpt, path)
    assert [p for p in multiprocessing.active_children() if p not in before] == []


@pytest.mark.parametrize("cameras, message", [
    (None, r"cameras: the policy sees camera images \['agentview_image', 'robot0_eye_in_hand_image'\]; "
           r"this config has no camera \['agentview', 'robot0_eye_in_hand'\]"),
    ({"agentview": {"camera": "agentview", "width": 64, "height": 84, "fps": 20},
      "robot0_eye_in_hand": {"camera": "robot0_eye_in_hand", "width": 84, "height": 84, "fps": 20}},
     r"cameras\.agentview: 64x84 px \(width x height\), but the policy was trained on 84x84"),
    ({name: {"source": i, "width": 640, "height": 480, "fps": 30} for i, name in enumerate(CAMERAS)},
     r"cameras\.agentview: 640x480 px \(width x height\), but the policy was trained on 84x84; add "
     r"image_size: \[84, 84\] to resize the camera's frames"),
    ({name: {"source": i, "width": 640, "height": 480, "fps": 30, "image_size": [84, 64]}
      for i, name in enumerate(CAMERAS)},
     r"cameras\.agentview\.image_size: \[84, 64\] \(height, width\), but the policy was trained on \[84, 84\]"),
])
def test_deploy_checks_the_cameras_an_image_policy_needs(tmp_path, cameras, message):
    """Checked from the configs alone, before the checkpoint's weights are read or anything is built."""
    from robolearn.apps.deploy import PolicyStack
    from robolearn.utils.config import load_config

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    OmegaConf.save(load_config(["task=lift_image", "policy=diffusion_image"]), ckpt / "config.yaml")
    for name in ("policy.json", "model.safetensors"):
        (ckpt / name).write_text("{}")
    path = rig(tmp_path, cameras)
    with pytest.raises(ConfigError, match=re.escape(path) + ": " + message):
        PolicyStack(ckpt, path)


# ------------------------------------------------------------------ deploy of an image policy


@pytest.mark.parametrize("kind", ["rendered", "video_file", "socket"])
def test_deploy_runs_an_image_policy_on_the_twin_and_reports_observation_ages(tmp_path, kind):
    """A tiny untrained image policy, 30 policy steps (1.5 s) on the twin: with the twin's rendered
    cameras (hardware/sim.yaml; hardware/sim_socket.yaml's rendered in the twin's process), and with real-camera sources (OpenCV on 160 x 120 video
    files, as a real arm's config lists them, resized to the policy's 84 x 84 by ``image_size``)."""
    from robolearn.apps.deploy import deploy

    ckpt = tiny_image_checkpoint(tmp_path / "ckpt", max_steps=30)
    robot = "sim"
    if kind == "socket":  # rendered in the twin's server process and streamed; a link that tolerates a loaded CI
        cfg = OmegaConf.load(rig(tmp_path, OmegaConf.load(hardware_dir() / "sim_socket.yaml").cameras, base="sim_socket"))
        cfg.link.stale_after_s = 0.1
        robot = str(tmp_path / "socket.yaml")
        OmegaConf.save(cfg, robot)
    if kind == "video_file":
        robot = rig(tmp_path, {name: {"source": write_video(tmp_path / f"{name}.avi", (40 * i, 90, 200), (160, 120)),
                                      "loop": True, "width": 160, "height": 120, "fps": 20, "image_size": [84, 84]}
                               for i, name in enumerate(CAMERAS)})
    before = set(multiprocessing.active_children())
    out = deploy(ckpt, robot=robot, episodes=1, realtime=False, progress=False)
    assert [p for p in multiprocessing.active_children() if p not in before] == []
    # slots that a loaded machine's stalls skip whole are not counted: no exact length on 2 shared cores
    assert 1 <= out["episodes"][0]["length"] <= 30
    age = out["obs_age_ms"]
    assert age["chunks"] >= 1 and set(age["per_camera"]) == set(CAMERAS)
    assert 0 < age["p50"] <= age["p99"] <= age["max"]
    assert all(out["cameras"][name]["frames"] >= 2 for name in CAMERAS)
    assert out["policy_latency_ms"]["p50"] > 0  # what deploy reported before, still there
    assert out["chunks"] == sum(r["chunks"] for r in out["episodes"]) >= 1
    assert out["chunks_stale"] == sum(r["chunks_stale"] for r in out["episodes"])
    assert out["chunks_late"] == sum(r["chunks_late"] for r in out["episodes"]) <= out["chunks_stale"]
