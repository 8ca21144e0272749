"""The MuJoCo twin in its own process, behind the Robot interface over a local TCP socket.

The server (:func:`serve`) owns the simulator and runs it in real time with its own control loop: one
physics step per period, then the newest state (plus the task observation and success flag, so a
policy needs no extra round trip) goes to the client. Commands from the client become the goal
from the next physics step on; with none coming the goal stays, so the simulated arm holds.

The client (:class:`SocketTwin`) has no threads (a Python receiver thread would wait for the
interpreter lock while the control loop spins, and states would arrive in bursts): every
:meth:`~SocketTwin.read_state` drains the socket without blocking and keeps the newest state, and
:meth:`~SocketTwin.send_command` writes at once (or when an injected latency has passed). For testing what a
real link does to the stack it injects faults:

* ``latency_s``: every state and every command is delivered this much later;
* ``drop_prob``: each state and each command is lost with this probability (seeded);
* :meth:`~SocketTwin.inject_disconnect`: the server drops the link (a pulled cable), and
  :meth:`~SocketTwin.inject_freeze`: the server stops sending but keeps the socket open (a hung
  controller).

A link is considered lost when the socket closes or when the newest state is older than
``stale_after_s`` (default 1.5 server periods); :meth:`~SocketTwin.read_state` then raises
``ConnectionError``, which the control session latches as a ``DISCONNECT`` fault.

Messages are newline-delimited JSON (``{"type": "state" | "command" | "request" | "reply", ...}``).

Cameras (:meth:`SocketTwin.make_camera`) are rendered in the server process, each in a thread of
its own from copies of the state that the server's loop takes between physics steps (a
:class:`~robolearn.robots.cameras.StateTap`, as the in-process twin does), and streamed over a
connection of their own: per frame a header (capture time, monotonic s; height; width) and the raw
``uint8 (H, W, 3)`` pixels. On the client a :class:`SocketCamera` thread receives them and keeps the
newest, so neither loop ever waits for a frame.
"""

from __future__ import annotations

import heapq
import json
import multiprocessing as mp
import socket
import struct
import time
from typing import Any

import numpy as np

from robolearn.robots.cameras import RenderedCamera, ThreadedFrameSource
from robolearn.robots.types import Capabilities, Command, ControlMode, RobotLimits, RobotState

#: a streamed frame's header: capture time (monotonic s, float64), height, width (px, uint32)
_FRAME_HEADER = struct.Struct("<dII")


def _state_msg(sim, seq: int, t: float) -> dict[str, Any]:
    q, qd = sim.joints()
    pos, quat = sim.eef_pose()
    obs = {k: v.tolist() for k, v in sim.task_obs().items()}
    return {"type": "state", "seq": seq, "t": t, "q": q.tolist(), "qd": qd.tolist(), "pos": pos.tolist(),
            "quat": quat.tolist(), "gripper": sim.gripper_opening(), "obs": obs, "success": sim.is_success()}


def make_twin_sim(task: str | None, robot: str):
    """The simulator of a twin: :class:`~robolearn.robots.so101_twin.So101Sim` for ``robot="so101"``
    (joint-position goals; ``task``'s scene, or the arm alone for ``None``), else robosuite's ``task``
    with ``robot`` (:class:`~robolearn.robots.twin.TwinSim`, pose goals)."""
    if robot.lower() == "so101":
        from robolearn.robots.so101_twin import So101Sim

        return So101Sim(task=task)
    from robolearn.robots.twin import TwinSim

    return TwinSim(task, robot)


class _StreamedCamera(RenderedCamera):
    """A :class:`~robolearn.robots.cameras.RenderedCamera` of the twin server that also sends each
    frame (header + pixels) to the one client that connects to ``listener``, in its own thread: a
    slow client holds back this camera's frames, never the server's loop."""

    def __init__(self, *args, listener: socket.socket, **kwargs):
        super().__init__(*args, **kwargs)
        self._listener = listener
        self._conn: socket.socket | None = None

    def setup(self) -> None:
        import os

        try:  # made on the server loop's thread, which may run SCHED_FIFO: rendering must not share its priority
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        except (AttributeError, OSError):
            pass
        self._listener.settimeout(10.0)
        try:
            self._conn, _ = self._listener.accept()
        finally:
            self._listener.close()
        self._conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._conn.settimeout(2.0)  # a client that stops reading ends this thread, never hangs it
        try:
            super().setup()
        except Exception as exc:  # e.g. no OpenGL: the client raises this message instead of timing out
            msg = f"{type(exc).__name__}: {exc}".encode()
            self._conn.sendall(_FRAME_HEADER.pack(0.0, 0, len(msg)) + msg)
            raise

    def capture(self) -> tuple[np.ndarray, float] | None:
        out = super().capture()
        if out is not None:  # a client that left raises OSError here and ends this thread
            frame, t = out
            self._conn.sendall(_FRAME_HEADER.pack(t, frame.shape[0], frame.shape[1]) + frame.tobytes())
        return out

    def teardown(self) -> None:
        if self._conn is not None:
            self._conn.close()
        super().teardown()


def serve(port_queue, task: str = "lift", robot: str = "Panda", rate_hz: float = 500.0, obs_every: int = 1,
          realtime: bool = False) -> None:
    """Server process body: accept one client on a free localhost port (put on ``port_queue``) and
    run the twin in real time until the client leaves.

    Args:
        obs_every: include the task observation and success flag in every this-many-th state.
    """
    from robolearn.robots.loop import ControlLoop

    sim = make_twin_sim(task, robot)
    sim.reset(None)
    srv = socket.create_server(("127.0.0.1", 0))
    meta = {"joint_range": sim.joint_range.tolist(), "dt": sim.dt}
    if hasattr(sim, "joint_vel_max"):
        meta["joint_vel_max"] = sim.joint_vel_max.tolist()
    port_queue.put((srv.getsockname()[1], meta))
    conn, _ = srv.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.setblocking(False)
    buf = b""
    steps_per_period = max(1, int(round(1.0 / (rate_hz * sim.dt))))
    state = {"seq": 0, "frozen": False, "closed": False}
    cameras: list[_StreamedCamera] = []
    tap = None  # the StateTap of the cameras, made by the first one

    out = bytearray()

    def send(msg: dict, must: bool = False) -> None:
        # Never block the server's loop on a slow client: states that do not fit are dropped.
        if must or len(out) < 1 << 16:
            out.extend((json.dumps(msg) + "\n").encode())
        try:
            sent = conn.send(out)
            del out[:sent]
        except BlockingIOError:
            pass
        except OSError:
            state["closed"] = True

    def open_camera(msg: dict) -> dict:
        nonlocal tap
        from robolearn.robots.cameras import StateTap

        model, data = sim.camera_state()
        tap = tap or StateTap(data)
        listener = socket.create_server(("127.0.0.1", 0))
        try:
            cam = _StreamedCamera(msg["name"], model, tap, msg["camera"], msg["width"], msg["height"], msg["fps"],
                                  listener=listener)
        except ValueError as exc:  # not a camera of the model, a bad size or rate: the client raises it
            listener.close()
            return {"error": str(exc)}
        cameras.append(cam.start())
        tap.serve(force=True)  # the first frame's state, before the loop's next step
        return {"port": listener.getsockname()[1]}

    def handle(msg: dict) -> None:
        if msg["type"] == "command" and "q" in msg:  # joint-position twin
            sim.set_joint_goal(np.asarray(msg["q"]), msg["gripper"])
        elif msg["type"] == "command":
            sim.set_goal(np.asarray(msg["pos"]), np.asarray(msg["quat"]),
                         sim.gripper_opening() if msg["gripper"] is None else msg["gripper"])
        elif msg["type"] == "request":
            op = msg["op"]
            if op == "reset":
                t_reset = time.monotonic()  # before the reset: snapshots stamped later show the new scene
                sim.reset(msg.get("seed"))
            elif op == "freeze":
                state["frozen"] = True
                return
            elif op == "drop_link":
                state["closed"] = True
                return
            elif op == "camera":
                send({"type": "reply", "id": msg["id"], **open_camera(msg)}, must=True)
                return
            reply = {"type": "reply", "id": msg["id"]}
            if op == "reset":
                reply["reset_time"] = t_reset  # every earlier frame shows the last episode
                if tap is not None:
                    tap.serve(force=True)  # the cameras show the new episode's scene at once
            reply.update(_state_msg(sim, state["seq"], time.monotonic()))
            reply["type"] = "reply"
            send(reply, must=True)

    def step(k: int, deadline: float):
        nonlocal buf
        try:
            chunk = conn.recv(1 << 20)
            if chunk == b"":
                state["closed"] = True
            buf += chunk
        except BlockingIOError:
            pass
        except OSError:
            state["closed"] = True
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            handle(json.loads(line))
        if state["closed"]:
            return
        for _ in range(steps_per_period):
            sim.step()
        if tap is not None:  # a camera asked for the state: a copy now, between physics steps
            tap.serve()
        if state["frozen"]:
            return
        state["seq"] += 1
        if k % obs_every == 0:
            msg = _state_msg(sim, state["seq"], time.monotonic())
        else:
            q, qd = sim.joints()
            pos, quat = sim.eef_pose()
            msg = {"type": "state", "seq": state["seq"], "t": time.monotonic(), "q": q.tolist(), "qd": qd.tolist(),
                   "pos": pos.tolist(), "quat": quat.tolist(), "gripper": sim.gripper_opening()}
        send(msg)

    loop = ControlLoop(rate_hz, step, realtime=realtime)
    try:
        loop.run(stop_when=lambda: state["closed"])
    finally:
        for cam in cameras:
            cam.close()
        conn.close()
        srv.close()
        sim.close()


class SocketCamera(ThreadedFrameSource):
    """The client end of a camera rendered by the twin server (:meth:`SocketTwin.make_camera`): a
    thread receives the streamed frames and publishes the newest (a backlog is skipped, never
    queued), stamped with its capture time in the server (monotonic s; one clock for the processes
    of one machine).

    Args:
        name: the camera's name (its frames are the policy's ``<name>_image``).
        port: the server's localhost port of this camera.
        width, height: the frame size asked for (px); a frame of another size is an error.
        poll_s: how long one receive waits before the thread checks whether it should stop.

    Raises:
        ConnectionError: in the thread (kept in :attr:`error`; :func:`~robolearn.robots.cameras.wait_frames`
            raises it as the ``DeviceError`` it chains): the server closed the stream, cannot
            render the camera (its error's message), or sent a frame of another size.
    """

    def __init__(self, name: str, port: int, width: int, height: int, poll_s: float = 0.1):
        super().__init__(name, fps=1000.0)  # the server paces the frames; this thread only waits on them
        self.port, self.width, self.height, self.poll_s = int(port), int(width), int(height), float(poll_s)
        self._frame_bytes = _FRAME_HEADER.size + self.width * self.height * 3
        self._sock: socket.socket | None = None
        self._buf = bytearray()

    def setup(self) -> None:
        self._sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def _recv(self, block: bool) -> bool:
        """Append what the socket has to the buffer (waiting up to ``poll_s`` when ``block``);
        ``False`` when nothing came."""
        self._sock.settimeout(self.poll_s if block else 0.0)  # a timeout socket would wait even with MSG_DONTWAIT
        try:
            chunk = self._sock.recv(1 << 20)
        except (socket.timeout, BlockingIOError):
            return False
        if not chunk:
            self._raise_error_record()
            raise ConnectionError(f"camera {self.name!r}: the twin server closed the stream")
        self._buf += chunk
        return True

    def _raise_error_record(self) -> bool:
        """Raise the server's error record (header with height 0, then ``width`` bytes of message:
        its renderer failed) when the buffer starts with a whole one; ``True`` when it starts with
        part of one."""
        if len(self._buf) < _FRAME_HEADER.size:
            return False
        _, h, size = _FRAME_HEADER.unpack_from(self._buf)
        if h != 0:
            return False
        if len(self._buf) >= _FRAME_HEADER.size + size:
            text = bytes(self._buf[_FRAME_HEADER.size: _FRAME_HEADER.size + size]).decode(errors="replace")
            raise ConnectionError(f"camera {self.name!r}: the twin server cannot render it: {text}")
        return True

    def capture(self) -> tuple[np.ndarray, float] | None:
        n = self._frame_bytes
        # wait for one whole frame (up to poll_s), then take the backlog too; an error record (height 0)
        # is raised once whole, whatever its length
        while self._raise_error_record() or len(self._buf) < n:
            if not self._recv(block=True):
                return None
        while self._recv(block=False):
            pass
        k = len(self._buf) // n
        raw = bytes(self._buf[(k - 1) * n: k * n])
        del self._buf[: k * n]
        t, h, w = _FRAME_HEADER.unpack_from(raw)
        if (h, w) != (self.height, self.width):
            raise ConnectionError(f"camera {self.name!r}: the server sent {w}x{h} frames, not {self.width}x{self.height}")
        return np.frombuffer(raw, np.uint8, offset=_FRAME_HEADER.size).reshape(h, w, 3).copy(), t

    def teardown(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class SocketTwin:
    """Client of a twin server process, implementing :class:`~robolearn.robots.types.Robot`.

    Args:
        task, robot: the scene the server simulates.
        rate_hz: the server's loop rate (Hz); one physics step per period at 500 Hz.
        latency_s, drop_prob, seed: fault injection (see the module docstring).
        stale_after_s: a state older than this means the link is lost (default 1.5 periods, so the
            loop notices within two periods of the last state).
        workspace_lower, workspace_upper, eef_speed_max, eef_rot_speed_max, gripper_speed_max: limits
            as for :class:`~robolearn.robots.twin.MujocoTwin`.

    Raises:
        ConnectionError: the server did not come up, or the link is lost (from the Robot methods).
    """

    def __init__(self, task: str = "lift", robot: str = "Panda", rate_hz: float = 500.0, latency_s: float = 0.0,
                 drop_prob: float = 0.0, seed: int = 0, stale_after_s: float | None = None,
                 workspace_lower=(-0.45, -0.4, 0.8), workspace_upper=(0.35, 0.4, 1.4), eef_speed_max: float = 1.0,
                 eef_rot_speed_max: float = 3.0, gripper_speed_max: float = 10.0, server_realtime: bool = False):
        self.task, self.robot, self.rate_hz = task, robot, float(rate_hz)
        self.latency_s, self.drop_prob = float(latency_s), float(drop_prob)
        self.stale_after_s = 1.5 / self.rate_hz if stale_after_s is None else float(stale_after_s)
        self._limit_args = dict(workspace_lower=workspace_lower, workspace_upper=workspace_upper,
                                eef_speed_max=eef_speed_max, eef_rot_speed_max=eef_rot_speed_max,
                                gripper_speed_max=gripper_speed_max)
        self.server_realtime = server_realtime
        self.mode = ControlMode.JOINT_POSITION if robot.lower() == "so101" else ControlMode.EEF_POSE
        if self.mode == ControlMode.JOINT_POSITION:
            from robolearn.robots.so101_twin import SO101_JOINTS

            self.joint_names = SO101_JOINTS
        self.capabilities = Capabilities(control_modes=(self.mode,), has_gripper=True, max_rate_hz=rate_hz)
        self.limits: RobotLimits | None = None
        self._rng = np.random.default_rng(seed)
        self._sock: socket.socket | None = None
        self._proc = None
        self._incoming: list = []  # heap of (due time, n, msg)
        self._outgoing: list = []  # heap of (due time, n, bytes)
        self._latest: RobotState | None = None
        self._latest_obs: dict | None = None
        self._latest_success = False
        self._replies: dict[int, dict] = {}
        self._buf = b""
        self._closed = True
        self._n = 0
        self.reset_time = -float("inf")  # monotonic s of the server's last reset
        self.n_states_dropped = 0
        self.n_commands_dropped = 0

    # ------------------------------------------------------------------ lifecycle
    def connect(self, timeout_s: float = 120.0) -> None:
        """Start the server process and connect to it (nothing happens when connected already).

        Raises:
            ConnectionError: the server did not report its port within ``timeout_s``.
        """
        from robolearn.robots.twin import twin_limits

        if self._proc is not None and not self._closed:
            return
        self.disconnect()  # a lost link: the old server and socket go, and what they left
        self._buf, self._incoming, self._outgoing, self._replies, self._latest = b"", [], [], {}, None

        ctx = mp.get_context("forkserver")
        q = ctx.Queue()
        self._proc = ctx.Process(target=serve, args=(q, self.task, self.robot, self.rate_hz, 1, self.server_realtime),
                                 daemon=True, name="robolearn-twin")
        self._proc.start()
        try:
            port, meta = q.get(timeout=timeout_s)
        except Exception as exc:  # queue.Empty
            self._proc.terminate()
            raise ConnectionError(f"twin server did not start within {timeout_s} s") from exc
        self.limits = twin_limits(meta["joint_range"], joint_vel_max=meta.get("joint_vel_max"), **self._limit_args)
        try:
            self._sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock.setblocking(False)
            self._closed = False
            deadline = time.monotonic() + timeout_s
            while not self._incoming and time.monotonic() < deadline:
                self._pump()
                time.sleep(0.001)
            if not self._incoming:
                raise ConnectionError("twin server sent no state")
        except BaseException:
            self.disconnect()  # no half-connected twin: the server process and socket go
            raise
        time.sleep(self.latency_s)

    def disconnect(self) -> None:
        """Close the link and stop the server (idempotent)."""
        self._closed = True
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None
        if self._proc is not None:
            self._proc.join(timeout=5)
            if self._proc.is_alive():
                self._proc.terminate()
            self._proc = None

    close = disconnect

    # ------------------------------------------------------------------ socket I/O (no threads)
    def _pump(self) -> None:
        """Take every complete message waiting in the socket (non-blocking)."""
        if self._closed:
            return
        while True:
            try:
                chunk = self._sock.recv(1 << 20)
            except BlockingIOError:
                break
            except OSError:
                self._closed = True
                return
            if not chunk:
                self._closed = True
                return
            self._buf += chunk
        states = []
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            msg = json.loads(line)
            if msg["type"] == "reply":
                self._replies[msg["id"]] = msg
            elif self.drop_prob and self._rng.random() < self.drop_prob:
                self.n_states_dropped += 1
            else:
                states.append(msg)
        now = time.monotonic()  # after parsing: a backlog must not look stale the moment it is read
        for msg in states:
            self._n += 1
            heapq.heappush(self._incoming, (now + self.latency_s, self._n, msg))

    def _flush(self) -> None:
        """Send every delayed command that is due."""
        now = time.monotonic()
        while self._outgoing and self._outgoing[0][0] <= now:
            _, _, data = heapq.heappop(self._outgoing)
            self._write(data)

    def _write(self, data: bytes) -> None:
        try:
            self._sock.setblocking(True)
            self._sock.sendall(data)
            self._sock.setblocking(False)
        except (OSError, AttributeError):
            self._closed = True

    # ------------------------------------------------------------------ Robot interface
    def read_state(self) -> RobotState:
        """The newest delivered state.

        Raises:
            ConnectionError: the socket closed, or the newest state is older than ``stale_after_s``.
        """
        self._pump()
        self._flush()
        now = time.monotonic()
        while self._incoming and self._incoming[0][0] <= now:
            due, _, msg = heapq.heappop(self._incoming)
            self._latest = RobotState(np.asarray(msg["q"]), np.asarray(msg["qd"]), np.asarray(msg["pos"]),
                                      np.asarray(msg["quat"]), float(msg["gripper"]), float(msg["t"]),
                                      due, int(msg["seq"]))
            if "obs" in msg:
                self._latest_obs = {k: np.asarray(v, dtype=np.float32) for k, v in msg["obs"].items()}
                self._latest_success = bool(msg["success"])
        if self._closed:
            raise ConnectionError("twin link closed")
        if self._latest is None or now - self._latest.receive_time > self.stale_after_s:
            raise ConnectionError(f"no state from the twin for more than {self.stale_after_s * 1e3:.1f} ms")
        return self._latest

    def send_command(self, command: Command) -> None:
        """Queue ``command`` (``EEF_POSE``; ``JOINT_POSITION`` for the SO-101) for the server (after
        the injected latency, unless dropped).

        Raises:
            ConnectionError: the link is closed.
            ValueError: a mode other than the twin's.
        """
        if self._closed:
            raise ConnectionError("twin link closed")
        if command.mode != self.mode:
            raise ValueError(f"SocketTwin of {self.robot} takes {self.mode.name} commands, got {command.mode.value}")
        if self.drop_prob and self._rng.random() < self.drop_prob:
            self.n_commands_dropped += 1
            return
        gripper = None if command.gripper is None else float(command.gripper)
        if self.mode == ControlMode.JOINT_POSITION:
            msg = {"type": "command", "q": list(map(float, command.joint_pos)), "gripper": gripper}
        else:
            msg = {"type": "command", "pos": list(map(float, command.eef_pos)),
                   "quat": list(map(float, command.eef_quat)), "gripper": gripper}
        data = (json.dumps(msg) + "\n").encode()
        if self.latency_s == 0:
            self._write(data)
            if self._closed:  # the write found the link gone: this command did not leave
                raise ConnectionError("twin link closed")
        else:
            self._n += 1
            heapq.heappush(self._outgoing, (time.monotonic() + self.latency_s, self._n, data))
            self._flush()

    # ------------------------------------------------------------------ simulator extras and faults
    def _request(self, op: str, timeout_s: float = 10.0, **kw) -> dict | None:
        if self._closed:
            raise ConnectionError(f"twin link closed (not connected): cannot {op!r}")
        self._n += 1
        rid = self._n
        self._write((json.dumps({"type": "request", "op": op, "id": rid, **kw}) + "\n").encode())
        if op in ("freeze", "drop_link"):
            return None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._pump()
            if rid in self._replies:
                return self._replies.pop(rid)
            time.sleep(0.0005)
        raise ConnectionError(f"twin did not answer {op!r} within {timeout_s} s")

    def reset(self, seed: int | None = None) -> None:
        """Start the seeded episode on the server (blocking; not for use inside the loop).
        :attr:`reset_time` (monotonic s) is when the server reset: camera frames captured after it
        show the new episode (wait for them with ``wait_frames(cameras, after=twin.reset_time)``)."""
        reply = self._request("reset", seed=seed)
        self.reset_time = float(reply["reset_time"])
        self._incoming.clear()
        self._latest = None
        self._latest_obs = {k: np.asarray(v, dtype=np.float32) for k, v in reply["obs"].items()}
        self._latest_success = bool(reply["success"])
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:  # wait for the first state of the new episode
            self._pump()
            if self._incoming and self._incoming[0][0] <= time.monotonic():
                return
            time.sleep(0.0005)
        raise ConnectionError("twin sent no state after reset")

    def task_obs(self) -> dict[str, np.ndarray]:
        """The newest task observation the server streamed (with every state)."""
        return self._latest_obs

    def is_success(self) -> bool:
        """The success flag streamed with the newest observation."""
        return self._latest_success

    def make_camera(self, name: str, camera: str, width: int, height: int, fps: float, wait_s: float = 10.0):
        """A started :class:`SocketCamera` of the model's ``camera``, rendered in the server process
        at ``fps`` Hz (``uint8 (height, width, 3)``, as the eval environment renders it), its first
        frame already there. Call it on the thread that uses this client, outside the loop.

        Raises:
            ValueError: ``camera`` is not in the model (the message lists the model's cameras), or
                a bad size or fps.
            ConnectionError: the server did not answer; DeviceError: no first frame within ``wait_s``.
        """
        from robolearn.robots.cameras import start_camera

        reply = self._request("camera", name=str(name), camera=str(camera), width=int(width), height=int(height),
                              fps=float(fps))
        if "error" in reply:
            raise ValueError(reply["error"])
        return start_camera(SocketCamera(name, reply["port"], width, height), wait_s)

    def inject_disconnect(self) -> None:
        """Fault injection: the server drops the link at once."""
        self._request("drop_link")

    def inject_freeze(self) -> None:
        """Fault injection: the server stops sending states (socket stays open)."""
        self._request("freeze")
