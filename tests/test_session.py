"""The loop body shared by deploy, record and replay: watchdog hold, disconnect latch, and a policy's
relative actions anchored on the pose measured at the start of their step. Fake clock, fake robot."""

import numpy as np

from robolearn.robots.loop import ControlLoop, ManualClock
from robolearn.robots.runner import ChunkResult
from robolearn.robots.safety import SafetyLayer
from robolearn.robots.scheduler import ActionScheduler
from robolearn.envs.actions import DeltaEefAdapter
from robolearn.robots.session import ControlSession, PolicySource
from robolearn.robots.types import Capabilities, Command, ControlMode, FaultKind, RobotLimits, RobotState

LIMITS = RobotLimits(joint_lower=-np.ones(2), joint_upper=np.ones(2), joint_vel_max=np.ones(2),
                     workspace_lower=np.array([-1.0, -1.0, 0.0]), workspace_upper=np.array([1.0, 1.0, 1.0]),
                     eef_speed_max=100.0, eef_rot_speed_max=100.0, gripper_speed_max=100.0)



class PointRobot:
    """Tracks every pose command perfectly; can be told to disconnect at a time."""

    limits = LIMITS
    capabilities = Capabilities(control_modes=(ControlMode.EEF_POSE,))

    def __init__(self, clock, disconnect_at=np.inf):
        self.clock, self.disconnect_at = clock, disconnect_at
        self.pos, self.quat, self.seq = np.array([0.0, 0.0, 0.5]), np.array([0.0, 0.0, 0.0, 1.0]), 0
        self.received = []

    def connect(self):
        pass

    def disconnect(self):
        pass

    def read_state(self):
        if self.clock() >= self.disconnect_at:
            raise ConnectionError("link down")
        self.seq += 1
        t = self.clock()
        return RobotState(np.zeros(2), np.zeros(2), self.pos.copy(), self.quat.copy(), 1.0, t, t, self.seq)

    def send_command(self, c):
        self.received.append((self.clock(), c))
        self.pos, self.quat = np.asarray(c.eef_pos, float), np.asarray(c.eef_quat, float)


class Scripted:
    """Moves +1 mm in x per period until ``stop_at`` (s), then proposes nothing."""

    def __init__(self, clock, stop_at):
        self.clock, self.stop_at = clock, stop_at

    def command(self, k, deadline, state, slot_start):
        if self.clock() >= self.stop_at:
            return None
        return Command(ControlMode.EEF_POSE, eef_pos=state.eef_pos + [0.001, 0, 0], eef_quat=state.eef_quat)


def run(robot, source, clock, seconds, rate=500, timeout=0.02, **kw):
    safety = SafetyLayer(LIMITS, robot.capabilities, robot.read_state(), watchdog_timeout=timeout)
    session = ControlSession(robot, safety, source, clock=clock, **kw)
    loop = ControlLoop(rate, session.step, spin_s=0, clock=clock, sleep=clock.sleep)
    stats = loop.run(duration_s=seconds, stop_when=lambda: session.done)
    return session, safety, stats


def test_robot_holds_within_one_period_after_the_watchdog_timeout():
    clock = ManualClock()
    robot = PointRobot(clock)
    session, safety, _ = run(robot, Scripted(clock, stop_at=0.1), clock, seconds=0.3)
    (fault,) = safety.faults
    assert fault.kind == FaultKind.WATCHDOG
    last_fresh = max(t for t, c in robot.received if t < 0.1)
    assert last_fresh + 0.02 - 1e-9 <= fault.time <= last_fresh + 0.02 + 0.002 + 1e-9  # timeout + at most one period
    after = [c.eef_pos for t, c in robot.received if t >= fault.time]
    assert len(after) > 50 and all(np.array_equal(p, after[0]) for p in after)  # held still, every period
    np.testing.assert_allclose(after[0], robot.received[-1][1].eef_pos)


def test_disconnect_is_latched_and_ends_the_run():
    clock = ManualClock()
    robot = PointRobot(clock, disconnect_at=0.05)
    session, safety, stats = run(robot, Scripted(clock, stop_at=1.0), clock, seconds=1.0)
    assert session.disconnected and session.done
    assert [f.kind for f in safety.faults] == [FaultKind.DISCONNECT]
    assert 0.05 <= safety.faults[0].time <= 0.05 + 0.002 + 1e-9
    assert stats.steps == 26  # 25 periods before 0.05 s, then the one that found the link down


class InstantRunner:
    """Returns a fixed chunk of relative actions ``latency`` s after each request."""

    def __init__(self, clock, chunk, latency):
        self.clock, self.chunk, self.latency = clock, chunk, latency
        self.busy, self.latencies, self.pending, self.requests = False, [], None, []

    def submit(self, obs, t_obs):
        self.requests.append((t_obs, obs))
        self.pending, self.busy = ChunkResult(self.chunk, t_obs, t_obs, t_obs + self.latency, 0), True

    def poll(self):
        if self.pending is not None and self.clock() >= self.pending.t_done - 1e-12:
            r, self.pending, self.busy = self.pending, None, False
            self.latencies.append(self.latency)
            return r
        return None


def test_relative_actions_are_anchored_per_step_and_stale_ones_dropped():
    clock = ManualClock()
    robot = PointRobot(clock)
    chunk = np.zeros((6, 7))
    chunk[:, 0] = 0.01 * np.arange(1, 7)  # action i moves +i cm in x from the pose at its step
    chunk[:, 6] = 1.0                     # close the gripper
    runner = InstantRunner(clock, chunk, latency=0.015)
    scheduler = ActionScheduler(7, interpolate=False)
    source = PolicySource(runner, scheduler, DeltaEefAdapter(), lambda: {"pos": robot.pos.copy()},
                          n_obs_steps=2, n_action_steps=4, slot_s=0.05)
    session, safety, _ = run(robot, source, clock, seconds=0.2, timeout=0.1, ticks_per_slot=25)
    assert safety.faults == ()
    # Chunk 1 (observed at 0 s) arrives at 0.015 s: its action 0 is stale and dropped, actions 1 and 2
    # run at 0.05 and 0.10 s. With one slot of latency and 4 executed steps the next request goes out
    # at 0.10 s; from 0.15 s on the newest chunk wins (receding horizon): its action 1.
    assert [round(t, 3) for t, _ in runner.requests[:2]] == [0.0, 0.1]
    assert scheduler.n_stale_dropped >= 2
    xs = {round(t, 3): c.eef_pos[0] for t, c in robot.received}
    np.testing.assert_allclose([xs[0.05], xs[0.1], xs[0.15]], [0.02, 0.02 + 0.03, 0.02 + 0.03 + 0.02])
    np.testing.assert_allclose(xs[0.148], xs[0.1])  # each offset is held for its whole step
    assert all(c.gripper == 0.0 for t, c in robot.received if t >= 0.06)  # closes at 100 per s from 0.05 s
    # The first request carried the first observation twice (n_obs_steps history at the start).
    first = runner.requests[0][1]["pos"]
    assert first.shape == (2, 3) and np.array_equal(first[0], first[1])
