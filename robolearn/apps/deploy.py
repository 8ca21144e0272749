"""``robolearn deploy``: run a trained policy on a robot through the HAL.

The policy runs in its own process (:class:`~robolearn.robots.runner.PolicyRunner`) on the newest
observation history and hands over timestamped chunks; the action scheduler drops what is already
past and feeds one action per policy step; the safety layer filters every command; the real-time
control loop (:class:`~robolearn.robots.loop.ControlLoop`) reads and commands the robot at its own
rate (500 Hz on the MuJoCo twin) and never waits for the policy.

On the MuJoCo twin, episodes start from the same seeds as ``robolearn eval`` (same checkpoint, same
``--episodes``/``--seed-start``), so the two success rates can be compared directly.

Image policies see the cameras of the robot config that their ``<camera>_image`` keys name
(:mod:`robolearn.robots.cameras`): on the twin rendered beside the loop from its state, the eval
environment's frames; on a real arm OpenCV cameras. Each observation takes the newest frame of
each, and the observation's age (capture to policy input) is reported per chunk.

A combined residual-RL checkpoint (policy type ``residual``, from ``robolearn rl``) deploys like any
other: the policy source submits every policy step's observation (not only when a chunk runs low),
and the worker serves it through :class:`robolearn.rl.stepper.ResidualStepper`, which keeps the
frozen base's open-loop chunk between calls and answers each observation with the base's remaining
actions, each corrected by the residual's deterministic mean: the same action ``robolearn eval``
takes at that step, in a chunk the scheduler handles as any other. ``--ddim-steps`` and
``--backend`` then apply to the base.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from robolearn.robots.types import SimulatedRobot
from robolearn.robots.cameras import age_summary, close_all, wait_frames
from robolearn.robots.config import load_robot_config, make_robot
from robolearn.robots.loop import ControlLoop, LoopStats
from robolearn.robots.runner import PolicyRunner, StallingPolicy
from robolearn.robots.safety import SafetyLayer
from robolearn.robots.scheduler import ActionScheduler
from robolearn.envs.actions import task_action_adapter
from robolearn.robots.session import ControlSession, PolicySource
from robolearn.utils.errors import ConfigError, DeviceError

#: What a real robot's state gives a policy (the keys recordings store, :func:`robolearn.teleop.recorder.robot_obs`).
ROBOT_STATE_OBS = ("eef_pos", "eef_quat", "gripper", "joint_pos")


def _check_policy_cameras(rcfg: dict, names: list[str], image_size) -> None:
    """The robot config lists every camera the policy sees, at the size it was trained on (a real
    camera's ``image_size`` when it resizes, else its ``width`` x ``height``).

    Raises:
        ConfigError: a missing camera (``<file>: cameras: ...``), or a size that differs from the
            task's ``image_size`` (``<file>: cameras.<name>: ...``).
    """
    if not names:
        return
    where, cams = rcfg["_path"], rcfg.get("cameras") or {}
    missing = [n for n in names if n not in cams]
    if missing:
        raise ConfigError(f"{where}: cameras: the policy sees camera images {[f'{n}_image' for n in names]}; this "
                          f"config has no camera {missing} (it lists {sorted(cams)}); add e.g. "
                          f"'{missing[0]}: {{camera: {missing[0]}, width: 84, height: 84, fps: 20}}' on the twin "
                          "(or a real camera's 'source')")
    if image_size:
        h, w = int(image_size[0]), int(image_size[1])
        for n in names:
            if cams[n].get("image_size") is not None:  # a real camera's frames, resized to this
                rh, rw = (int(v) for v in cams[n]["image_size"])
                if (rh, rw) != (h, w):
                    raise ConfigError(f"{where}: cameras.{n}.image_size: [{rh}, {rw}] (height, width), but the "
                                      f"policy was trained on [{h}, {w}]")
                continue
            cw, ch = cams[n].get("width"), cams[n].get("height")
            if (cw is not None and cw != w) or (ch is not None and ch != h):
                hint = (f"; add image_size: [{h}, {w}] to resize the camera's frames" if "source" in cams[n] else "")
                raise ConfigError(f"{where}: cameras.{n}: {cw}x{ch} px (width x height), but the policy was trained "
                                  f"on {w}x{h}{hint}")


def _check_frames(where: str, cameras: dict, image_size) -> None:
    """Each camera's first frame has the policy's image shape ``(H, W, 3)`` (a device may deliver
    another size than asked; frames are resized only where the config says so, ``image_size``).

    Raises:
        DeviceError: a camera with another frame shape (named, with both shapes).
    """
    if not cameras or not image_size:
        return
    want = (int(image_size[0]), int(image_size[1]), 3)
    for name, (frame, _) in wait_frames(cameras).items():
        if tuple(frame.shape) != want or frame.dtype != np.uint8:
            raise DeviceError(f"{where}: cameras.{name}: delivers {frame.dtype} {tuple(frame.shape)} frames, the "
                              f"policy was trained on uint8 {want}")


def _check_control_mode(where: str, robot, adapter, task: str) -> None:
    """The robot takes the commands of the task's action convention: its control mode and, for
    joint-position actions, as many joints as the actions carry.

    Raises:
        ConfigError: the robot lacks the mode, or has another number of joints (file, task and both
            sides named).
    """
    from robolearn.robots.session import adapter_mode

    mode = adapter_mode(adapter)
    modes = [m.value for m in robot.capabilities.control_modes]
    if mode.value not in modes:
        raise ConfigError(f"{where}: the policy's task {task!r} acts in {mode.value} commands, but this robot "
                          f"takes {modes}")
    n = getattr(adapter, "n_joints", None)
    if n is not None and n != robot.limits.n_joints:
        raise ConfigError(f"{where}: the policy's task {task!r} gives targets for {n} joints, but this robot "
                          f"has {robot.limits.n_joints}")


class CheckpointPolicy:
    """Policy factory for the runner: loads a checkpoint in the worker process.

    ``CheckpointPolicy(path)()`` returns ``predict(obs) -> (T, action_dim)`` with
    ``obs = {key: (n_obs_steps, *shape)}`` in raw units. The chunk is the policy's
    ``predict_action_chunk``: every action the model predicts from the current step on
    (``horizon - n_obs_steps + 1``, not only ``n_action_steps``), so a late chunk still covers the
    steps after its latency (ACT's temporal ensembling, a per-step query, is not applied). The model is run once at load on
    an all-zero observation of the policy's shapes (a warm-up: its output is discarded), so the
    first real call is not slower than the rest.

    A per-step policy (a residual-RL policy: ``per_step`` true) is served by a
    :class:`robolearn.rl.stepper.ResidualStepper` instead (``predict(obs, t_obs)``, its step
    period the checkpoint task's ``control_freq``), whose base takes the inference steps and backend.

    Args:
        path: checkpoint or run directory.
        use_ema: use the EMA weights.
        num_inference_steps: override a diffusion policy's denoising steps.
        backend: inference backend (:func:`robolearn.policies.fast.accelerate`, with the worker's
            torch thread count; eager where the backend is missing). Exporting or compiling happens
            in the worker, before the warm-up call.
    """

    def __init__(self, path: str | Path, use_ema: bool = True, num_inference_steps: int | None = None,
                 backend: str = "eager"):
        self.path = str(path)
        self.use_ema = use_ema
        self.num_inference_steps = num_inference_steps
        self.backend = backend

    def __call__(self):
        import torch

        from robolearn.eval.rollout import chunked_model, set_inference_steps
        from robolearn.policies.fast import accelerate
        from robolearn.train.checkpoint import load_policy

        policy, cfg = load_policy(self.path, use_ema=self.use_ema)
        chunked = chunked_model(policy)
        set_inference_steps(chunked, self.num_inference_steps)
        if chunked is not policy:
            from robolearn.rl.stepper import ResidualStepper, warm_up

            base = accelerate(chunked, self.backend, threads=torch.get_num_threads())
            stepper = ResidualStepper(policy, 1.0 / float(cfg.task.control_freq), base=base)
            warm_up(stepper)
            return stepper
        policy = accelerate(policy, self.backend, threads=torch.get_num_threads())

        from robolearn.policies.vision import is_image_shape

        def predict(obs: dict[str, np.ndarray]) -> np.ndarray:
            # camera frames stay uint8 (H, W, 3), as the eval environments hand them to the policy
            batch = {k: torch.as_tensor(v if v.dtype == np.uint8 else np.asarray(v, dtype=np.float32))[None]
                     for k, v in ((k, np.asarray(v)) for k, v in obs.items())}
            return policy.predict_action_chunk(batch)[0].numpy()

        predict.reset = policy.reset
        dummy = {k: np.zeros((policy.n_obs_steps, *shape), np.uint8 if is_image_shape(shape) else np.float32)
                 for k, shape in policy.obs_shapes.items()}
        predict(dummy)
        return predict

    def check(self) -> bool:
        """Load the checkpoint once in this process and drop it, so that a bad ``policy.json``,
        weights that do not load or fit, or a ``num_inference_steps`` or backend the policy cannot
        take end in their own one-line error before the policy process starts (a load failure there
        arrives as the worker's traceback).

        Returns:
            Whether the policy acts per step (a residual-RL policy: its source must submit every
            step's observation, ``PolicySource(per_step=True)``).

        Raises:
            CheckpointError: see :func:`robolearn.train.checkpoint.load_policy`.
            ValueError: see :func:`robolearn.eval.rollout.set_inference_steps` and
                :func:`robolearn.policies.fast.check_backend`.
        """
        from robolearn.eval.rollout import chunked_model, set_inference_steps
        from robolearn.policies.fast import check_backend
        from robolearn.train.checkpoint import load_policy

        check_backend(self.backend)
        policy = load_policy(self.path, use_ema=self.use_ema)[0]
        chunked = chunked_model(policy)
        set_inference_steps(chunked, self.num_inference_steps)
        check_backend(self.backend, chunked)
        return chunked is not policy


class PolicyStack:
    """Everything between a checkpoint and a robot: driver, policy runner (started), scheduler and
    policy source, configured from the checkpoint's task and the robot's config.

    Args:
        checkpoint: checkpoint or run directory.
        robot: robot name (``hardware/<robot>.yaml``) or a YAML path.
        stall_s, stall_calls: fault injection: the given chunk numbers (1-based) take ``stall_s`` longer.
        use_ema, policy_threads, num_inference_steps, backend, pin_cpus: see :func:`deploy`.

    Attributes:
        cfg, rcfg: the checkpoint's and the robot's configs.
        robot, runner, scheduler, source, adapter: the built parts (the runner's policy process is
            started; the robot is connected only when the policy sees rendered cameras, which the
            twin renders once connected: over its socket, in its server process). :meth:`close` (or
            ``with PolicyStack(...)``) stops the process and disconnects the robot.
        cameras: ``{name: FrameSource}``, started, the ones the policy sees (``camera_names``, from
            its ``<name>_image`` keys); closed by :meth:`close`.
        simulated: whether the robot is a twin (task observation, seeded resets, success check).
        per_step: whether the policy acts on every step's observation (a residual-RL policy, served
            by :class:`robolearn.rl.stepper.ResidualStepper`; the source submits every step).
        rate_hz, policy_hz, ticks_per_slot, slot_s: loop rate, policy rate, periods per policy step.
        cpu_plan, cpu_plan_note: the CPUs planned for ``loop``, ``policy`` and ``cameras``
            (:func:`robolearn.robots.affinity.plan_affinity`; ``{}`` when not pinning) and why.

    Raises:
        ConfigError: unknown robot or an invalid robot config (file and key named; checked before
            the checkpoint is read), a task without a known action convention or whose commands
            (control mode, number of joints) the robot does not take, a robot that cannot
            provide the policy's observations, a camera the policy sees that the robot config lacks
            or lists at another size (checked before the weights are read), a rendered camera the
            twin's model does not have, or a loop rate that is not a multiple of the policy rate.
        CheckpointError: unreadable checkpoint (:meth:`CheckpointPolicy.check`, before the robot is
            built or the policy process started).
        DeviceError: a camera that cannot be opened or whose frames have another shape than the
            policy's images (before the policy process starts).
        ValueError: ``num_inference_steps`` the policy cannot take.
    """

    def __init__(self, checkpoint: str | Path, robot: str = "sim", stall_s: float = 0.0,
                 stall_calls: tuple[int, ...] = (), use_ema: bool = True, policy_threads: int = 1,
                 num_inference_steps: int | None = None, backend: str = "eager", pin_cpus: bool = True):
        from robolearn.robots.affinity import plan_affinity
        from robolearn.train.checkpoint import read_checkpoint_config

        self.rcfg = rcfg = load_robot_config(robot)  # first: a bad robot config is named before any other work
        self.cfg = cfg = read_checkpoint_config(checkpoint)
        self.task = task = cfg.task.name
        env = str(cfg.task.get("env") or task)  # lift_image is lift seen through cameras
        images = [str(k) for k in cfg.task.obs_keys if str(k).endswith("_image")]
        self.camera_names = [k[: -len("_image")] for k in images]
        _check_policy_cameras(rcfg, self.camera_names, cfg.task.get("image_size"))
        if rcfg.get("task", env) != env:
            raise ConfigError(f"{rcfg['_path']}: the twin simulates task {rcfg.get('task')!r} but the policy "
                              f"was trained on {task!r}")
        try:
            adapter = task_action_adapter(env)
        except KeyError as exc:
            raise ConfigError(exc.args[0]) from None
        self.rate_hz = float(rcfg["rate_hz"])
        self.policy_hz = float(cfg.task.control_freq)
        ratio = self.rate_hz / self.policy_hz
        if abs(ratio - round(ratio)) > 1e-9:
            raise ConfigError(f"loop rate {self.rate_hz} Hz is not a multiple of the policy rate {self.policy_hz} Hz")
        self.ticks_per_slot = int(round(ratio))
        self.slot_s = 1.0 / self.policy_hz
        factory = CheckpointPolicy(checkpoint, use_ema=use_ema, num_inference_steps=num_inference_steps,
                                   backend=backend)
        self.per_step = bool(factory.check())
        self.robot = rb = make_robot(rcfg)
        self.simulated = isinstance(rb, SimulatedRobot)
        state_keys = [str(k) for k in cfg.task.obs_keys if not str(k).endswith("_image")]
        if not self.simulated and not set(state_keys) <= set(ROBOT_STATE_OBS):
            raise ConfigError(f"robot {robot!r} cannot provide the policy's observations {state_keys} (a real "
                              f"robot gives {list(ROBOT_STATE_OBS)} from its state, as recording stores them, and "
                              "camera images; task-state policies deploy on the MuJoCo twin)")
        _check_control_mode(rcfg["_path"], rb, adapter, task)
        self.adapter = adapter
        if stall_s > 0 and stall_calls:
            factory = StallingPolicy(factory, stall_s, tuple(stall_calls))
        if pin_cpus:
            self.cpu_plan, self.cpu_plan_note = plan_affinity()
        else:
            self.cpu_plan, self.cpu_plan_note = {}, "not pinned (pinning turned off)"
        self.runner = PolicyRunner(factory, mode="process", num_threads=policy_threads,
                                   cpus=self.cpu_plan.get("policy"))
        self.scheduler = ActionScheduler(adapter.action_dim, mode="receding", interpolate=adapter.interpolate,
                                         quat_slice=adapter.quat_slice)
        self.cameras: dict = {}

        def obs_fn() -> dict:
            if self.simulated:
                obs = rb.task_obs()
            else:  # the state the session read this period, with the recorder's keys
                from robolearn.teleop.recorder import robot_obs

                obs = robot_obs(rb, self.source.state)
            return {k: obs[k] for k in state_keys}

        self.source = PolicySource(self.runner, self.scheduler, adapter, obs_fn,
                                   int(cfg.policy.n_obs_steps), int(cfg.policy.n_action_steps), self.slot_s,
                                   per_step=self.per_step)
        if self.camera_names:
            from robolearn.robots.affinity import pinned
            from robolearn.teleop.cameras import make_cameras

            try:
                if any("camera" in rcfg["cameras"][n] for n in self.camera_names):
                    rb.connect()  # rendered cameras: the twin over its socket renders in its server, which must run
                with pinned(self.cpu_plan.get("cameras")) as self._camera_pinning:  # their threads inherit the CPUs
                    self.cameras = make_cameras(rcfg.get("cameras"), rcfg["_path"], robot=rb, names=self.camera_names)
            except BaseException:
                rb.disconnect()
                raise
            self.source.cameras = self.cameras
        try:
            _check_frames(rcfg["_path"], self.cameras, cfg.task.get("image_size"))
            self.runner.start()  # last: nothing after it can fail and leave the policy process behind
        except BaseException:
            try:
                close_all(self.cameras)
            finally:
                rb.disconnect()  # connected for rendered cameras (the socket twin's server process)
            raise

    def close(self) -> None:
        """Stop the policy process and the cameras and disconnect the robot (idempotent; safe when
        any of them never started)."""
        try:
            self.runner.close()
        finally:
            try:
                close_all(self.cameras)
            finally:
                self.robot.disconnect()

    def __enter__(self) -> "PolicyStack":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def pinning_summary(self, loop: LoopStats | None = None) -> dict:
        """Which CPUs each part got: ``{"plan", "note", "loop": {"cpus", "note"}, "policy": {...},
        "cameras": {name: [cpu, ...] or None}}``, read back from the OS (the policy worker reports
        its own after pinning itself; camera threads are read through their native thread ids)."""
        from robolearn.robots.affinity import thread_cpus

        cams = {name: thread_cpus(getattr(cam, "_thread", None)) for name, cam in self.cameras.items()}
        cam_note = getattr(self, "_camera_pinning", (False, "no cameras"))[1]
        return {"plan": self.cpu_plan, "note": self.cpu_plan_note,
                "loop": {"cpus": loop.cpus, "note": loop.cpus_note} if loop is not None else None,
                "policy": {"cpus": self.runner.cpus, "note": self.runner.cpus_note},
                "cameras": {"cpus": cams, "note": cam_note}}

    def new_safety(self) -> SafetyLayer:
        """A fresh safety layer anchored on the robot's current state (connected robot)."""
        return SafetyLayer(self.robot.limits, self.robot.capabilities, self.robot.read_state(),
                           watchdog_timeout=float(self.rcfg["watchdog_timeout_s"]))


def deploy(checkpoint: str | Path, robot: str = "sim", episodes: int = 50, seed_start: int | None = None,
           realtime: bool = True, stall_s: float = 0.0, stall_every: int = 0, use_ema: bool = True,
           policy_threads: int = 1, num_inference_steps: int | None = None,
           progress: bool = True, backend: str = "eager", pin_cpus: bool = True) -> dict[str, Any]:
    """Run ``episodes`` policy episodes on a robot through runner, scheduler, safety layer and loop.

    Args:
        checkpoint: checkpoint or run directory.
        robot: robot name (``hardware/<robot>.yaml``) or a YAML path.
        episodes: number of episodes.
        seed_start: first seed (default: the checkpoint config's ``eval.seed_start``); the seeds are
            those ``robolearn eval`` uses for the same arguments.
        realtime: ask for SCHED_FIFO + ``gc.freeze()`` for the loop (falls back where refused).
        stall_s, stall_every: fault injection: every ``stall_every``-th chunk takes ``stall_s`` longer.
        policy_threads: torch threads of the policy process. One by default: a second OpenMP
            thread shares the loop's core, is preempted by it, and every parallel region then
            waits for it (measured: 75 ms per chunk with one thread, 350 ms with two).
        num_inference_steps: override a diffusion policy's denoising steps (as ``robolearn eval``
            allows, so both can be compared at the same setting).
        backend: the policy's inference backend, ``"eager"``, ``"onnxruntime"`` or ``"compile"``
            (:mod:`robolearn.policies.fast`; eager, with a warning, where the backend is missing).
        pin_cpus: pin the loop to one CPU and the policy worker and cameras to the others, where
            the OS permits and at least two CPUs are allowed (:mod:`robolearn.robots.affinity`);
            otherwise everything runs unpinned and ``cpu_pinning`` says why.

    Returns:
        Success rate with its interval (like ``robolearn eval``), per-episode results (seed,
        success, length in policy steps, stale actions dropped, chunks and stale chunks, dry
        periods, clamped commands), and the loop's timing over all episodes (wake-up lateness
        percentiles in µs, overruns). ``chunks_stale``: chunks that arrived after their first
        action was due; that action is for the observation's own slot, so with any policy latency
        every chunk is (and ``stale_dropped_per_chunk`` is at least 1). ``chunks_late``: chunks that
        arrived after their second action (the next slot's) was due: the policy took longer than a
        slot; a fast policy has none.
        Image policies add ``obs_age_ms`` (per chunk, the policy's start on an observation minus
        the capture time of its oldest frame: ``p50``/``p99``/``max`` ms, ``chunks``, and per
        camera) and ``cameras`` (frames delivered and their mean rate). On a real arm (no success
        check) ``success_measured`` is false and every episode runs ``max_episode_steps``.
        ``cpu_pinning``: the CPUs each part got (:meth:`PolicyStack.pinning_summary`). With a
        stall injected, ``stalls``: the loop's misses inside stall windows and outside them, as
        counts, seconds and rates (:func:`robolearn.robots.affinity.run_miss_rates`).

    Raises:
        ConfigError: unknown robot, a robot that cannot provide the policy's observations, or a
            camera the policy needs that the robot config lacks or lists at another size.
        DeviceError: a camera that cannot be opened, fails, or delivers frames of another shape.
        CheckpointError: unreadable checkpoint.
        ValueError: ``episodes < 1`` or ``seed_start < 0`` (checked first), or a bad ``num_inference_steps``.
    """
    from robolearn.eval.rollout import check_episode_args, held_out_seeds, summarize
    from robolearn.utils.progress import progress_bar

    check_episode_args(episodes, seed_start)
    st = PolicyStack(checkpoint, robot, stall_s=stall_s,
                     stall_calls=tuple(range(stall_every, 100_000, stall_every)) if stall_every > 0 else (),
                     use_ema=use_ema, policy_threads=policy_threads, num_inference_steps=num_inference_steps,
                     backend=backend, pin_cpus=pin_cpus)
    cfg, rcfg, rb, runner, scheduler, source = st.cfg, st.rcfg, st.robot, st.runner, st.scheduler, st.source
    task, rate_hz, policy_hz, ticks_per_slot, slot_s = st.task, st.rate_hz, st.policy_hz, st.ticks_per_slot, st.slot_s
    max_steps = int(cfg.task.max_episode_steps)
    seeds = held_out_seeds(cfg, episodes, seed_start)
    all_stats = LoopStats()
    runs: list[LoopStats] = []
    results = []
    t_start = time.monotonic()
    bar = progress_bar(total=len(seeds), desc="deploy", disable=not progress, unit="ep")
    try:
        rb.connect()  # inside the try: a robot that fails to connect must not leave the policy process running
        for seed in seeds:
            runner.reset()
            source.reset()
            t_reset = time.monotonic()
            if st.simulated:
                rb.reset(seed)
            # the policy's first frames show this episode's scene, not the last one's (set-up, not the loop);
            # the twin over its socket says when its server reset (frames stamped before show the last scene)
            wait_frames(st.cameras, after=max(t_reset, getattr(rb, "reset_time", t_reset)))
            dropped0, dry0 = scheduler.n_stale_dropped, scheduler.n_dry
            chunks0, stale0, late0 = scheduler.n_chunks, scheduler.n_chunks_stale, scheduler.n_chunks_late
            safety = st.new_safety()
            episode = {"steps": 0, "success": False}

            def on_slot(k, deadline, state, episode=episode):
                if k == 0:
                    return False
                episode["steps"] += 1
                episode["success"] = episode["success"] or (st.simulated and rb.is_success())
                return episode["success"] or episode["steps"] >= max_steps

            session = ControlSession(rb, safety, source, ticks_per_slot, on_slot=on_slot)
            loop = ControlLoop(rate_hz, session.step, realtime=realtime, cpus=st.cpu_plan.get("loop"))
            stats = loop.run(duration_s=(max_steps + 2) * slot_s, stop_when=lambda: session.done,
                             on_start=getattr(rb, "sync", rb.read_state))
            _merge(all_stats, stats)
            runs.append(stats)
            results.append({"seed": int(seed), "success": bool(episode["success"]), "length": episode["steps"],
                            "stale_dropped": scheduler.n_stale_dropped - dropped0, "dry": scheduler.n_dry - dry0,
                            "chunks": scheduler.n_chunks - chunks0, "chunks_stale": scheduler.n_chunks_stale - stale0,
                            "chunks_late": scheduler.n_chunks_late - late0,
                            "clamped": safety.n_clamped, "refused": safety.n_refused,
                            "faults": [f.kind.value for f in safety.faults], "lag_s": round(getattr(rb, "lag_s", 0.0), 4)})
            bar.update(1)
            bar.set_postfix(success=f"{np.mean([r['success'] for r in results]):.2f}", refresh=False)
        pinning = st.pinning_summary(runs[-1] if runs else None)
    finally:
        bar.close()
        st.close()
    out = summarize(results)
    if stall_every > 0 and stall_s > 0:
        from robolearn.robots.affinity import run_miss_rates, stall_windows

        out["stalls"] = run_miss_rates(stall_windows(runner.chunk_log, stall_every), runs)
    lat = np.asarray(runner.latencies) * 1e3
    wall = time.monotonic() - t_start
    n_chunks, n_stale = int(sum(r["chunks"] for r in results)), int(sum(r["chunks_stale"] for r in results))
    out.update({
        "success_measured": st.simulated,  # a real arm has no success check: episodes run to max_episode_steps
        "obs_age_ms": age_summary(source.obs_ages),
        "cameras": {name: {"frames": int(getattr(cam, "n_frames", 0)),
                           "mean_fps": round(getattr(cam, "n_frames", 0) / wall, 2)} for name, cam in st.cameras.items()},
    })
    out.update({
        "checkpoint": str(checkpoint), "task": task, "robot": rcfg.get("name", robot), "driver": rcfg["driver"],
        "seeds": [seeds[0], seeds[-1]], "rate_hz": rate_hz, "policy_hz": policy_hz,
        "wall_s": round(time.monotonic() - t_start, 2), "loop": all_stats.summary(),
        "policy_latency_ms": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
                              "max": float(lat.max())} if len(lat) else {},
        "stale_dropped": int(sum(r["stale_dropped"] for r in results)), "dry_periods": int(sum(r["dry"] for r in results)),
        # chunks that arrived after their first action (the observation slot's) was due, and after
        # their second (the next slot's, the policy took more than a slot) was
        "chunks": n_chunks, "chunks_stale": n_stale, "chunks_late": int(sum(r["chunks_late"] for r in results)),
        "stale_dropped_per_chunk": round(sum(r["stale_dropped"] for r in results) / n_chunks, 3) if n_chunks else None,
        "cpu_pinning": pinning,
        "stall_s": stall_s, "stall_every": stall_every, "num_inference_steps": num_inference_steps, "backend": backend,
        "episodes": results,
    })
    return out


def _merge(into: LoopStats, s: LoopStats) -> None:
    into.steps += s.steps
    into.overruns += s.overruns
    into.missed_deadlines += s.missed_deadlines
    into.lateness += s.lateness
    into.step_time += s.step_time
    for k, v in s.sections.items():
        into.sections.setdefault(k, []).extend(v)
    into.realtime, into.realtime_note = s.realtime, s.realtime_note
    into.cpus, into.cpus_note = s.cpus, s.cpus_note


def deploy_and_save(checkpoint: str | Path, robot: str = "sim", episodes: int = 50, out: str | Path | None = None,
                    **kwargs) -> tuple[dict[str, Any], Path]:
    """``robolearn deploy``: :func:`deploy`, then the result as JSON at ``out`` (default
    ``<run>/deploy_<robot>_<episodes>.json``). Returns ``(result, JSON path)``."""
    import json

    from robolearn.apps.eval import run_dir_of

    result = deploy(checkpoint, robot=robot, episodes=episodes, **kwargs)
    out = Path(out) if out else run_dir_of(checkpoint) / f"deploy_{result['robot']}_{episodes}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return result, out
