"""HAL benchmarks: real-time loop timing, a policy stall, watchdog hold, link loss, deploy vs eval.

    .venv/bin/python benchmarks/bench_hal.py [--checkpoint runs/quickstart/train] [--seconds 60]
        [--deploy-episodes 50] [--out benchmarks/results/hal.json]

Needs a trained Lift checkpoint (``make quickstart`` makes one). Sections:

* ``loop_fifo`` / ``loop_no_fifo``: the 500 Hz loop on the in-process MuJoCo twin for ``--seconds``
  with the diffusion policy running in its process, with and without SCHED_FIFO + gc.freeze():
  wake-up lateness p50/p99/p99.9/max (µs), overruns, missed deadlines, time by section.
* ``loop_fifo_socket`` / ``stall_socket`` (only when named in ``--only``): the same with the twin in
  its own process over the socket.
* ``stall`` / ``stall_no_pin``: the same, with 50 ms added to every 10th chunk, with and without
  CPU pinning (loop on one CPU, policy worker on the others; :mod:`robolearn.robots.affinity`):
  missed deadlines per second inside stall windows against outside them (``stalls``, see
  :func:`policy_loop`), stale actions dropped, dry periods, and the largest change between
  consecutive commands against the per-step limit. Every section records the CPUs each part got
  (``cpu_pinning``) and the 1-minute load average before and after.
* ``watchdog``: a command source that stops: time from its last command to the first hold (must be
  at most the timeout plus one period), and how far the arm moved after that.
* ``link_loss``: the twin in its own process over a socket; the cable is pulled (server drops the
  link) or the server hangs: time from injection, and from the last state received, to the latched
  DISCONNECT fault (goal: two periods).
* ``deploy_vs_eval``: ``robolearn deploy`` on the twin and ``robolearn eval`` on the same checkpoint
  and seeds.
* ``deploy_vs_eval_image`` / ``deploy_vs_eval_so101`` (only when named in ``--only``): the same for an
  image policy, the twin's cameras rendered off the loop, with the observation age (capture to policy
  input) p50/p99: ``--image-checkpoint`` on the Panda twin (``sim``; bench_policies'
  ``lift_image_diffusion``) and ``--so101-checkpoint`` on the SO-101 twin (``so101_sim``;
  ``so101_pick_image_diffusion``). ``deploy_vs_eval_image_fast``: the Lift image policy with
  ``--stale-steps`` DDIM steps on ONNX Runtime, in deploy and in eval.
* ``stale_chunks``: ``robolearn deploy`` on the twin (``--deploy-episodes``, at most 10) with the
  checkpoint's sampler in eager torch, and with ``--stale-steps`` denoising steps on ONNX Runtime
  (the cost of a distilled few-step policy: a consistency step runs the same network as a DDIM
  step), or of ``--fast-checkpoint`` (a distilled student) at those steps: chunks that arrived after
  their first action was due (the observation slot's: every chunk, with any latency), after their
  second was (late: the policy took more than a slot), actions dropped per chunk, policy latency,
  success.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from robolearn.apps.deploy import PolicyStack, deploy
from robolearn.robots.loop import ControlLoop
from robolearn.robots.session import ControlSession
from robolearn.robots.types import Command, ControlMode, FaultKind


def policy_loop(checkpoint: str, seconds: float, realtime: bool, stall_every: int = 0, stall_s: float = 0.05,
                robot: str = "sim", pin_cpus: bool = True) -> dict:
    """The loop with the policy in its process for ``seconds``; with ``stall_every``, every
    ``stall_every``-th chunk takes ``stall_s`` longer.

    Stall windows and misses are those of :mod:`robolearn.robots.affinity`: a window runs from the
    stalled chunk's start in the policy worker (its ``time.monotonic()`` just before ``predict``,
    which begins with the injected sleep) to its receipt by the loop's poll (the loop process's
    ``time.monotonic()``; CLOCK_MONOTONIC is one clock for both processes); a miss is a deadline the
    loop skipped after an overrun, placed at that deadline. ``stalls`` gives seconds, counts and
    misses (and overruns) per second inside the windows and outside them; ``overruns_during_stalls``
    and ``overruns_outside_stalls`` are the loop's overruns (a step ending after the next deadline)
    that began inside and outside windows.
    """
    from robolearn.robots.affinity import run_miss_rates, stall_windows

    load_before = os.getloadavg()
    stack = PolicyStack(checkpoint, robot, stall_s=stall_s, pin_cpus=pin_cpus,
                        stall_calls=tuple(range(stall_every, 100_000, stall_every)) if stall_every else ())
    rb = stack.robot
    rb.connect()
    rb.reset(100000)
    stack.runner.reset()
    safety = stack.new_safety()
    session = ControlSession(rb, safety, stack.source, stack.ticks_per_slot)
    session.record_sent = True
    loop = ControlLoop(stack.rate_hz, session.step, realtime=realtime, cpus=stack.cpu_plan.get("loop"))
    stats = loop.run(duration_s=seconds, on_start=getattr(rb, "sync", rb.read_state))
    pinning = stack.pinning_summary(stats)
    stack.runner.close()
    # The policy wrapper stalls calls stall_every, 2 * stall_every, ...: those chunks, in arrival order.
    stalls = stall_windows(stack.runner.chunk_log, stall_every)
    rates = run_miss_rates(stalls, [stats])
    sent = [c for c in session.sent if c.mode == ControlMode.EEF_POSE]
    t = np.array([c.timestamp for c in sent])
    pos = np.array([c.eef_pos for c in sent])
    dt = np.diff(t)
    speed = np.linalg.norm(np.diff(pos, axis=0), axis=1) / np.maximum(dt, 1e-9)
    lat = np.asarray(stack.runner.latencies) * 1e3
    rb.close()
    return {
        "seconds": seconds, **stats.summary(),
        "chunks": stack.source.n_chunks, "stale_dropped": stack.scheduler.n_stale_dropped,
        "dry_periods": stack.scheduler.n_dry, "faults": [f.kind.value for f in safety.faults],
        "policy_latency_ms": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
                              "max": float(lat.max())},
        "max_command_speed_m_s": float(speed.max()), "eef_speed_limit_m_s": rb.limits.eef_speed_max,
        "max_command_step_m": float(np.linalg.norm(np.diff(pos, axis=0), axis=1).max()),
        "stall_s": stall_s if stall_every else 0.0, "stall_every_chunks": stall_every, "robot": robot,
        "stalled_chunks": rates["stall_windows"], "overruns_during_stalls": rates["overruns_in_stalls"],
        "overruns_outside_stalls": rates["overruns_outside"],
        **({"stalls": rates, "misses_per_s_in_stalls": rates["misses_per_s_in_stalls"],
            "misses_per_s_outside": rates["misses_per_s_outside"]} if stall_every else {}),
        "cpu_pinning": pinning, "load_avg_1min": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }


class StopsAt:
    """Moves the arm 1 cm/s upward until ``stop_at`` (monotonic s), then proposes nothing."""

    def __init__(self, stop_at: float):
        self.stop_at = stop_at
        self.last_command_time = None
        self.start = None

    def command(self, k, deadline, state, slot_start):
        now = time.monotonic()
        if now >= self.stop_at:
            return None
        if self.start is None:
            self.start = (state.eef_pos.copy(), state.eef_quat.copy(), now)
        self.last_command_time = now
        pos, quat, t0 = self.start
        return Command(ControlMode.EEF_POSE, eef_pos=pos + [0, 0, 0.01 * (now - t0)], eef_quat=quat, gripper=1.0)


def watchdog(timeout_s: float = 0.1, run_s: float = 1.0) -> dict:
    from robolearn.robots.safety import SafetyLayer
    from robolearn.robots.twin import MujocoTwin

    rb = MujocoTwin()
    rb.connect()
    rb.reset(1)
    safety = SafetyLayer(rb.limits, rb.capabilities, rb.read_state(), watchdog_timeout=timeout_s)
    source = StopsAt(time.monotonic() + 0.5)
    session = ControlSession(rb, safety, source)
    held_at = {}

    def step(k, deadline):
        out = session.step(k, deadline)
        if safety.faults and "t" not in held_at:
            held_at["t"] = time.monotonic()
            held_at["pos"] = rb.read_state().eef_pos.copy()
        return out

    loop = ControlLoop(500, step, realtime=True)
    loop.run(duration_s=run_s)
    fault = safety.faults[0]
    final = rb.read_state().eef_pos
    rb.close()
    return {"timeout_s": timeout_s, "period_s": 0.002, "fault": fault.kind.value,
            "hold_after_last_command_s": fault.time - source.last_command_time,
            "hold_beyond_timeout_s": fault.time - source.last_command_time - timeout_s,
            "arm_motion_after_hold_m": float(np.linalg.norm(final - held_at["pos"]))}


def link_loss(kind: str, repeats: int = 5) -> dict:
    from robolearn.robots.socket_twin import SocketTwin

    delays, since_last, false_positives = [], [], 0
    for i in range(repeats):
        rb = SocketTwin(server_realtime=True)
        rb.connect()
        rb.reset(i)
        safety = None
        from robolearn.robots.safety import SafetyLayer

        safety = SafetyLayer(rb.limits, rb.capabilities, rb.read_state(), watchdog_timeout=0.1)
        source = StopsAt(time.monotonic() + 10)
        session = ControlSession(rb, safety, source)
        injected = {}
        last_state = {"t": None}

        def step(k, deadline):
            if k == 250:
                injected["t"] = time.monotonic()
                rb.inject_disconnect() if kind == "pulled_cable" else rb.inject_freeze()
            out = session.step(k, deadline)
            if session.last_state is not None:
                last_state["t"] = session.last_state.receive_time
            return out

        loop = ControlLoop(500, step, realtime=True)
        loop.run(duration_s=2.0, stop_when=lambda: session.done)
        faults = [f for f in safety.faults if f.kind == FaultKind.DISCONNECT]
        if "t" not in injected:  # the link was declared lost before anything was injected
            false_positives += 1
        else:
            delays.append(faults[0].time - injected["t"] if faults else float("nan"))
            since_last.append(faults[0].time - last_state["t"] if faults else float("nan"))
        rb.disconnect()
    d = np.array(delays) * 1e3
    return {"kind": kind, "repeats": repeats, "detect_ms": d.round(3).tolist(),
            "detect_after_last_state_ms": (np.array(since_last) * 1e3).round(3).tolist(),
            "max_ms": float(np.nanmax(d)) if len(d) else None, "two_periods_ms": 4.0,
            "all_detected": bool(np.all(np.isfinite(d))), "false_positives_before_injection": false_positives}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="runs/quickstart/train")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--deploy-episodes", type=int, default=50)
    p.add_argument("--only", nargs="*", default=None,
                   help="sections to run (default: all but the *_socket ones, which put a third busy process "
                        "on the machine: the twin server)")
    p.add_argument("--out", default="benchmarks/results/hal.json")
    p.add_argument("--note", default=None, help="conditions to record in each section run (e.g. other load)")
    p.add_argument("--stale-steps", type=int, default=1, help="denoising steps of the fast run of stale_chunks")
    p.add_argument("--fast-checkpoint", default=None,
                   help="stale_chunks' fast run deploys this checkpoint (e.g. a robolearn distill run) instead of "
                        "--checkpoint at --stale-steps")
    p.add_argument("--image-checkpoint", default="runs/lift_image/diffusion",
                   help="deploy_vs_eval_image's Lift image policy (bench_policies.py --only lift_image_diffusion)")
    p.add_argument("--so101-checkpoint", default="runs/so101/image_diffusion",
                   help="deploy_vs_eval_so101's SO-101 image policy (bench_policies.py --only so101_pick_image_diffusion)")
    args = p.parse_args()
    image_sections = {"deploy_vs_eval_image": args.image_checkpoint, "deploy_vs_eval_image_fast": args.image_checkpoint,
                      "deploy_vs_eval_so101": args.so101_checkpoint}
    needed = {ckpt for name, ckpt in image_sections.items() if args.only and name in args.only}
    if not args.only or set(args.only) - set(image_sections):
        needed.add(args.checkpoint)
    for ckpt in sorted(needed):
        if not Path(ckpt).exists():
            sys.exit(f"no checkpoint at {ckpt}: train it first (`make quickstart` for runs/quickstart/train, "
                     "benchmarks/bench_policies.py for the image policies) or pass its option")
    out_path = Path(args.out)
    result = json.loads(out_path.read_text()) if out_path.exists() else {}
    # The file-level "machine" is the one the first full run was measured on; a section run now records
    # its own (bench_policies' record, with the CPU model), so a partial rerun does not relabel the others.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_policies import machine_info

    result.setdefault("machine", machine_info())
    sections = {
        "loop_fifo": lambda: policy_loop(args.checkpoint, args.seconds, realtime=True),
        "loop_no_fifo": lambda: policy_loop(args.checkpoint, args.seconds, realtime=False),
        "stall": lambda: policy_loop(args.checkpoint, min(args.seconds, 30.0), realtime=True, stall_every=10),
        "stall_no_pin": lambda: policy_loop(args.checkpoint, min(args.seconds, 30.0), realtime=True, stall_every=10,
                                            pin_cpus=False),
        "loop_fifo_socket": lambda: policy_loop(args.checkpoint, args.seconds, realtime=True, robot="sim_socket"),
        "stall_socket": lambda: policy_loop(args.checkpoint, min(args.seconds, 30.0), realtime=True, stall_every=10,
                                            robot="sim_socket"),
        "watchdog": watchdog,
        "link_loss_pulled_cable": lambda: link_loss("pulled_cable"),
        "link_loss_hung_server": lambda: link_loss("hung_server"),
        "deploy_vs_eval": lambda: deploy_vs_eval(args.checkpoint, args.deploy_episodes),
        "deploy_vs_eval_image": lambda: deploy_vs_eval(args.image_checkpoint, args.deploy_episodes),
        "deploy_vs_eval_image_fast": lambda: deploy_vs_eval(args.image_checkpoint, args.deploy_episodes,
                                                            num_inference_steps=args.stale_steps, backend="onnxruntime"),
        "deploy_vs_eval_so101": lambda: deploy_vs_eval(args.so101_checkpoint, args.deploy_episodes, robot="so101_sim"),
        "stale_chunks": lambda: stale_chunks(args.checkpoint, min(args.deploy_episodes, 10), args.stale_steps,
                                             args.fast_checkpoint),
    }
    for name, fn in sections.items():
        if (args.only and name not in args.only) or (not args.only and (name.endswith("_socket")
                                                                       or name in image_sections)):
            continue
        t0 = time.monotonic()
        result[name] = fn()
        result[name]["wall_s"] = round(time.monotonic() - t0, 1)
        result[name]["machine"] = machine_info()
        if args.note:
            result[name]["note"] = args.note
        print(name, json.dumps({k: v for k, v in result[name].items() if k not in ("sections", "episodes")}))
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=2))


def deploy_vs_eval(checkpoint: str, episodes: int, robot: str = "sim", num_inference_steps: int | None = None,
                   backend: str = "eager") -> dict:
    """``robolearn deploy --robot robot`` and ``robolearn eval`` of ``checkpoint`` on the same seeds, both
    at ``num_inference_steps`` (default: the checkpoint's) on ``backend``; an image policy's deploy adds
    the observation age (``obs_age_ms``, capture to policy input)."""
    from robolearn.eval.rollout import evaluate_checkpoint

    kw = {"num_inference_steps": num_inference_steps, "backend": backend}
    d = deploy(checkpoint, robot, episodes=episodes, realtime=True, progress=False, **kw)
    e = evaluate_checkpoint(checkpoint, episodes, progress=False, **kw)
    assert [r["seed"] for r in d["episodes"]] == [r["seed"] for r in e["episodes"]]
    return {"checkpoint": str(checkpoint), "robot": robot, "episodes": episodes, "seeds": d["seeds"], **kw,
            "policy_hz": d["policy_hz"],
            "deploy": {k: d[k] for k in ("success_rate", "success_ci95", "mean_episode_length", "wall_s",
                                         "stale_dropped", "dry_periods", "policy_latency_ms", "obs_age_ms")
                       if k in d},
            "deploy_loop_lateness_us": d["loop"]["lateness"], "deploy_missed_deadlines": d["loop"]["missed_deadlines"],
            "eval": {k: e[k] for k in ("success_rate", "success_ci95", "mean_episode_length", "wall_s")},
            "difference_points": round(100 * (d["success_rate"] - e["success_rate"]), 1)}


def stale_chunks(checkpoint: str, episodes: int, fast_steps: int, fast_checkpoint: str | None = None) -> dict:
    """Deploy on the twin as trained (eager) and with ``fast_steps`` denoising steps on ONNX Runtime
    (of ``fast_checkpoint`` when given, e.g. a distilled student; else of ``checkpoint``)."""
    runs = {}
    fast = fast_checkpoint or checkpoint
    for name, ckpt, kw in (("as_trained_eager", checkpoint, {}),
                           (f"{fast_steps}_steps_onnxruntime", fast,
                            {"num_inference_steps": fast_steps, "backend": "onnxruntime"})):
        d = deploy(ckpt, "sim", episodes=episodes, realtime=True, progress=False, **kw)
        runs[name] = {k: d[k] for k in ("num_inference_steps", "backend", "chunks", "chunks_stale", "chunks_late", "stale_dropped",
                                        "stale_dropped_per_chunk", "policy_latency_ms", "success_rate",
                                        "mean_episode_length", "dry_periods")}
        runs[name].update(checkpoint=str(ckpt), slot_ms=round(1e3 / d["policy_hz"], 1))
    return {"episodes": episodes, "runs": runs}


if __name__ == "__main__":
    main()
