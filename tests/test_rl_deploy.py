"""robolearn deploy of a combined residual-RL checkpoint: the worker's per-step predict
(:class:`robolearn.rl.stepper.ResidualStepper`) against the eval actor, the policy source's per-step
requests, the runner forwarding observation times, a deployed episode on the Lift twin, and the
refusal of a residual whose base sees images."""

import json
import multiprocessing
from collections import deque

import gymnasium as gym
import numpy as np
import pytest
import torch

from test_deploy import LIFT_OBS, tiny_lift_checkpoint
from test_session import InstantRunner, PointRobot, run

#: Lift's action bounds (robosuite's OSC delta pose: m, rad, gripper), the residual's normalized space.
LIFT_LOW = [-0.05] * 3 + [-0.5] * 3 + [-1.0]
LIFT_HIGH = [0.05] * 3 + [0.5] * 3 + [1.0]
STEP_S = 0.05  # lift's control_freq 20 Hz


def tiny_residual(tmp, max_steps: int = 12):
    """A residual around the tiny untrained Lift diffusion base of ``test_deploy`` (horizon 8, 2 obs
    steps, 4 executed, 2 DDIM steps), its actor's last layer given seeded nonzero weights; saved as a
    ``residual`` checkpoint whose task ends episodes after ``max_steps``. Returns ``(policy, dir)``."""
    from robolearn.rl.trainer import build_residual
    from robolearn.train.checkpoint import load_policy, save_checkpoint

    base, cfg = load_policy(tiny_lift_checkpoint(tmp / "base"))
    torch.manual_seed(1)
    rl = {"residual": {"hidden": [16, 16], "log_std_init": -1.0, "learn_log_std": False, "scale": 0.1},
          "base_inference_steps": 2}
    policy = build_residual(base, "diffusion", gym.spaces.Box(np.float32(LIFT_LOW), np.float32(LIFT_HIGH)), rl)
    last = policy.residual.actor[-1]
    with torch.no_grad():
        last.weight.copy_(torch.randn(last.weight.shape, generator=torch.Generator().manual_seed(2)))
        last.bias.copy_(0.5 * torch.ones_like(last.bias))
    cfg.task.max_episode_steps = max_steps
    return policy, save_checkpoint(tmp / "residual", policy, cfg, "residual")


@pytest.fixture(scope="module")
def residual(tmp_path_factory):
    return tiny_residual(tmp_path_factory.mktemp("rl_deploy"))


def observations(n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``n`` random Lift observations ``{key: float32 (*shape)}``."""
    rng = np.random.default_rng(seed)
    return [{k: rng.normal(size=s).astype(np.float32) for k, s in LIFT_OBS.items()} for _ in range(n)]


def stacked(history) -> dict[str, np.ndarray]:
    return {k: np.stack([h[k] for h in history]) for k in history[0]}


# ------------------------------------------------------------------ the worker's per-step predict


def test_stepper_matches_the_eval_actor_step_for_step(residual):
    from robolearn.rl.stepper import ResidualStepper

    policy, _ = residual
    obs = observations(10)
    keys = list(LIFT_OBS)
    torch.manual_seed(7)  # the diffusion base's noise: torch's global generator, as in deploy's worker
    actor = policy.make_actor(1, 7, keys, deterministic=True)
    history = deque([obs[0]] * policy.n_obs_steps, maxlen=policy.n_obs_steps)
    expected = []
    for k, o in enumerate(obs):
        if k:
            history.append(o)
        expected.append(actor.act([True], [history])[0])
    torch.manual_seed(7)
    stepper = ResidualStepper(policy, STEP_S)
    history = deque([obs[0]] * policy.n_obs_steps, maxlen=policy.n_obs_steps)
    answers = []
    for k, o in enumerate(obs):
        if k:
            history.append(o)
        answers.append(stepper(stacked(history), 100.0 + k * STEP_S))
    got = np.stack([a[0] for a in answers])
    np.testing.assert_allclose(got, np.stack(expected), atol=1e-6, rtol=0)
    assert stepper.n_base_queries == 3 and actor.base.n_queries == 3  # steps 0, 4, 8 (n_action_steps 4)
    # the residual is in the executed actions (its last layer is nonzero), and in the whole tail:
    # action i is base_{step+i} corrected on this observation
    base = actor.last["base"][0].numpy()
    assert np.abs(got[-1] - base).max() > 1e-4
    chunk_length = policy.base.chunk_length
    assert [len(a) for a in answers] == [chunk_length - (k % 4) for k in range(10)]
    tail = stepper._chunk[stepper.step + 1:].clone()  # base actions after the last step (step 9: chunk index 1)
    now = {k: torch.from_numpy(obs[-1][k])[None].expand(len(tail), *LIFT_OBS[k]) for k in policy.obs_keys}
    want = policy.combine(tail, policy.residual.actor(policy.residual_input(now, tail)))
    np.testing.assert_allclose(answers[-1][1:], want.detach().numpy(), atol=1e-6, rtol=0)
    assert np.abs(answers[-1][1:] - tail.numpy()).max() > 1e-4


def test_stepper_places_observations_by_time_and_resets(residual):
    """A request the loop could not submit (the worker was busy) does not shift the base's steps."""
    from robolearn.rl.stepper import ResidualStepper

    policy, _ = residual
    stepper = ResidualStepper(policy, STEP_S)
    hist = stacked(observations(policy.n_obs_steps, seed=3))
    lengths = []
    for k in (0, 1, 3, 4, 5):  # steps 2 was skipped; step 4 is past the 4 executed actions: a new chunk
        lengths.append(len(stepper(hist, 7.0 + k * STEP_S + 1e-4)))
        assert stepper.step == (k if k < 4 else k - 4)
    assert stepper.n_base_queries == 2
    L = policy.base.chunk_length
    assert lengths == [L, L - 1, L - 3, L, L - 1]
    stepper.reset()
    stepper(hist, 9.0 + 2 * STEP_S)  # a new episode: a new chunk whatever the time
    assert stepper.n_base_queries == 3 and stepper.step == 0
    stepper(hist)  # untimed: the next step
    assert stepper.step == 1
    with pytest.raises(KeyError, match=r"observation key 'object' missing"):
        stepper({k: v for k, v in hist.items() if k != "object"}, 9.2)
    with pytest.raises(ValueError, match=r"observation 'object' has shape \(1, 10\).*\(>= 2, 10\)"):
        stepper({**hist, "object": hist["object"][-1:]}, 9.2)
    with pytest.raises(ValueError, match="step_s must be > 0"):
        ResidualStepper(policy, 0.0)


def test_runner_forwards_observation_times_to_a_timed_predict():
    from robolearn.robots.runner import PolicyRunner, StallingPolicy

    class Timed:
        def __call__(self):
            def predict(obs, t_obs):
                return np.full((2, 1), t_obs)

            predict.takes_obs_time = True
            return predict

    stalled = StallingPolicy(Timed(), 0.0, ())()
    assert stalled.takes_obs_time and stalled({"x": np.zeros((1, 1))}, 3.5)[0, 0] == 3.5
    with PolicyRunner(StallingPolicy(Timed(), 0.01, (1,)), mode="thread") as runner:
        runner.submit({"x": np.zeros((1, 1))}, t_obs=12.25)
        np.testing.assert_array_equal(runner.wait(10).actions, [[12.25], [12.25]])


# ------------------------------------------------------------------ the policy source and deploy


class SyncRunner(InstantRunner):
    """:class:`InstantRunner` whose answer is ``predict(obs, t_obs)``, computed at submission; every
    ``(t_obs, answer)`` is kept in :attr:`answers`."""

    def __init__(self, clock, predict, latency):
        super().__init__(clock, None, latency)
        self.predict, self.answers = predict, []

    def submit(self, obs, t_obs):
        self.chunk = self.predict(obs, t_obs)
        self.answers.append((t_obs, self.chunk))
        return super().submit(obs, t_obs)


def test_per_step_source_submits_every_step_and_executes_corrected_actions(residual):
    """Lift's relative actions are held for their slot, decided at its start, before the slot's
    observation is taken: each slot executes action 1 of the previous slot's answer, which carries
    the residual's correction."""
    from robolearn.envs.actions import DeltaEefAdapter
    from robolearn.rl.stepper import ResidualStepper
    from robolearn.robots.loop import ManualClock
    from robolearn.robots.scheduler import ActionScheduler
    from robolearn.robots.session import PolicySource

    class Recording(ActionScheduler):
        def get(self, now):
            out = super().get(now)
            executed.append((round(now, 4), out))
            return out

    executed = []
    policy, _ = residual
    clock = ManualClock()
    robot = PointRobot(clock)
    stream = iter(observations(40, seed=5))
    runner = SyncRunner(clock, ResidualStepper(policy, STEP_S), latency=0.004)
    source = PolicySource(runner, Recording(7, interpolate=False), DeltaEefAdapter(), lambda: dict(next(stream)),
                          n_obs_steps=2, n_action_steps=4, slot_s=STEP_S, per_step=True)
    run(robot, source, clock, seconds=0.5, timeout=0.1, ticks_per_slot=25)
    times = [round(t, 4) for t, _ in runner.answers]
    assert times == [round(STEP_S * s, 4) for s in range(len(times))] and len(times) >= 9  # one request per slot
    by_time = dict(executed)
    for t, answer in runner.answers[:-1]:
        np.testing.assert_allclose(by_time[round(t + STEP_S, 4)], answer[1], rtol=0, atol=1e-12)
    assert runner.predict.n_base_queries == 3  # steps 0, 4, 8


def test_deploy_runs_a_residual_checkpoint_on_the_twin(residual, monkeypatch):
    import robolearn.apps.deploy as deploy_mod
    from robolearn.train.checkpoint import read_policy_type

    _, ckpt = residual
    assert read_policy_type(ckpt) == "residual"
    sources = []

    class Source(deploy_mod.PolicySource):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            sources.append(self)

    monkeypatch.setattr(deploy_mod, "PolicySource", Source)
    before = set(multiprocessing.active_children())
    out = deploy_mod.deploy(ckpt, robot="sim", episodes=1, realtime=False, progress=False, pin_cpus=False)
    assert out["n_episodes"] == 1 and out["task"] == "lift" and out["robot"] == "sim"
    (episode,) = out["episodes"]
    assert episode["faults"] == [] and 1 <= episode["length"] <= 12
    assert out["policy_latency_ms"]["p50"] > 0
    (source,) = sources
    # answers came back (one per step when the worker keeps up: timing-dependent here, so the per-step
    # schedule itself is asserted on a manual clock above)
    assert source.per_step and source.n_chunks >= 3
    assert [p for p in multiprocessing.active_children() if p not in before] == []


def test_a_residual_whose_base_sees_images_is_refused_in_one_line(residual, tmp_path):
    import shutil

    from robolearn.apps.deploy import PolicyStack
    from robolearn.utils.errors import CheckpointError

    _, ckpt = residual
    bad = tmp_path / "image_residual"
    shutil.copytree(ckpt, bad)
    meta = json.loads((bad / "policy.json").read_text())
    meta["kwargs"]["base_kwargs"]["obs_shapes"]["agentview_image"] = [84, 84, 3]
    (bad / "policy.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError) as err:
        PolicyStack(bad, robot="sim", pin_cpus=False)
    msg = str(err.value)
    assert "\n" not in msg and "policy.json" in msg and "state observations only" in msg
    assert "agentview_image" in msg
