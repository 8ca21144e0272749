"""``robolearn <command>``: quickstart, collect, train, rl, distill, eval, deploy, export, record, replay, calibrate, inspect, convert.

Argument parsing and printing only: each command calls its job in :mod:`robolearn.apps`.

Errors caused by input (paths, stores, configs, checkpoints) print one line and exit 1; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


# ------------------------------------------------------------------ commands


def cmd_inspect(args) -> int:
    """``robolearn inspect PATH [--check] [--json]``: summarize a store (text, or one JSON object);
    with ``--check``, decode every chunk instead and list the bad ones (exit 1 when there are any)."""
    from robolearn.data.store import EpisodeStore

    store = EpisodeStore.open(args.path)
    if args.check:
        return _print_check(store, args.json)
    summary = store.summary()
    if args.json:
        print(json.dumps(summary))
        return 0
    lengths = summary["episode_length"]
    print(f"{summary['path']}")
    print(f"  episodes: {summary['n_episodes']}   steps: {summary['n_steps']}   fps: {summary['fps']}")
    if summary["n_episodes"]:
        print(f"  episode length: min {lengths['min']}  mean {lengths['mean']:.1f}  max {lengths['max']}")
    for k in ("task", "robot", "schema_version"):
        if summary["attrs"].get(k) is not None:
            print(f"  {k}: {summary['attrs'][k]}")
    print("  keys:")
    nonfinite = {}
    for name, info in summary["keys"].items():
        rng = ""
        if "min" in info:
            fmt = lambda xs: "[" + ", ".join("-" if x is None else f"{x:.3g}" for x in xs[:8]) + (", ..." if len(xs) > 8 else "") + "]"  # noqa: E731
            flat_min = _flatten(info["min"])
            flat_max = _flatten(info["max"])
            rng = f"  min {fmt(flat_min)}  max {fmt(flat_max)}"
        units = f" ({info['units']})" if info.get("units") else ""
        if info.get("codec"):
            units += f" image, codec {info['codec']}"
        bad = info.get("nonfinite", {})
        if bad.get("count"):
            nonfinite[name] = bad
            rng += f"  NON-FINITE: {bad['nan']} NaN, {bad['inf']} Inf in episodes {_first(bad['episodes'])}"
        print(f"    {name:24s} {str(tuple(info['shape'])):12s} {info['dtype']:8s}{units}{rng}")
    if summary["meta_keys"]:
        print(f"  per-episode meta: {', '.join(summary['meta_keys'])}")
    for name, counts in summary.get("text_meta", {}).items():
        shown = "; ".join(f"{v!r} x{n}" for v, n in list(counts.items())[:5])
        print(f"  {name} (text, {len(counts)} distinct): {shown}" + (" ..." if len(counts) > 5 else ""))
    if nonfinite:
        print(f"  warning: NaN/Inf in {', '.join(nonfinite)} (min/max above are of the finite values); "
              "training refuses this store")
    return 0


def _print_check(store, as_json: bool) -> int:
    """Print :meth:`EpisodeStore.check`: one line per bad chunk, or one JSON object; 1 if any is bad."""
    import dataclasses

    n_chunks, bad = store.check()
    if as_json:
        print(json.dumps({"path": str(store.path), "n_chunks": n_chunks,
                          "bad_chunks": [dataclasses.asdict(b) for b in bad]}))
    else:
        for b in bad:
            print(f"{b.key}: {b.where()}: {b.reason}")
        if not bad:
            print(f"{store.path}: all {n_chunks} chunks decode")
    if bad:
        print(f"robolearn: error: {store.path}: {len(bad)} of {n_chunks} chunks do not decode"
              f"{'' if as_json else ' (listed above)'}", file=sys.stderr)
    return 1 if bad else 0


def _first(xs: list, n: int = 10) -> str:
    """``"[1, 2, 3, ...]"``: the first ``n`` items of a list and how many more."""
    return "[" + ", ".join(map(str, xs[:n])) + (f", ... ({len(xs) - n} more)" if len(xs) > n else "") + "]"


def _flatten(x):
    """Nested lists → flat list (per-key min/max of multi-dimensional keys)."""
    if isinstance(x, list):
        out = []
        for v in x:
            out.extend(_flatten(v))
        return out
    return [x]


def cmd_collect(args) -> int:
    """``robolearn collect``: record scripted-expert (or trained-policy) episodes into a store."""
    from robolearn.apps.collect import collect

    result = collect(args.task, args.episodes, out=args.out, cameras=args.cameras, overrides=args.overrides,
                     policy=args.policy, seed_start=args.seed_start, keep_failed=args.keep_failed, append=args.append,
                     overwrite=args.overwrite)
    print(f"collected {result['kept']} episodes ({result['steps']} steps) into {result['path']}; "
          f"dropped {result['dropped']} failed of {result['attempted']} attempted; {result['wall_s']:.1f} s")
    return 0


def cmd_train(args) -> int:
    """``robolearn train [overrides]``: train (or resume) the configured policy."""
    from robolearn.apps.train import train_from_overrides

    ckpt = train_from_overrides(args.overrides)
    if os.environ.get("RANK", "0") == "0":  # under torchrun: once, from rank 0
        print(f"checkpoint: {ckpt}")
    return 0


def cmd_rl(args) -> int:
    """``robolearn rl BASE [overrides]``: residual RL on a trained policy, then base vs base + residual."""
    from robolearn.apps.rl import residual_rl

    out = residual_rl(args.base, args.overrides, run_dir=args.out, final_eval=not args.no_eval)
    print(f"checkpoint: {out['checkpoint']}")
    comp = out["comparison"]
    if comp:
        for name, label in (("base", "base"), ("base_rl_steps", "base as RL runs it"),
                            ("residual", "base + residual")):
            r = comp.get(name)
            if r:
                lo, hi = r["success_ci95"]
                print(f"{label}: success rate {r['success_rate']:.2f} [{lo:.2f}, {hi:.2f}] "
                      f"({r['n_success']}/{r['n_episodes']}, seeds {r['seeds'][0]}-{r['seeds'][1]})")
        print(f"comparison: {Path(out['run_dir']) / 'eval_comparison.json'}")
    return 0


def cmd_distill(args) -> int:
    """``robolearn distill CHECKPOINT [overrides]``: distil a diffusion policy into a consistency policy."""
    from robolearn.apps.distill import distill_checkpoint

    out = distill_checkpoint(args.checkpoint, args.overrides, run_dir=args.out)
    s = out["summary"]
    before, after = s.get("gap_before") or {}, s.get("gap_after") or {}
    gaps = "; ".join(f"{k.replace('_', ' ')} {before[k]:.4f} -> {after[k]:.4f}" for k in before if k.startswith("gap") and k in after)
    print(f"checkpoint: {out['checkpoint']} ({s.get('method', 'consistency')}, {s['steps']} steps, "
          f"{s['num_inference_steps']}-step student of a "
          f"{s['teacher_steps']}-step DDIM teacher{'; ' + gaps if gaps else ''})")
    return 0


def cmd_eval(args) -> int:
    """``robolearn eval CHECKPOINT``: held-out rollouts; prints the success rate, writes JSON and a
    report folder (``report.md``, plots, MP4 videos of the first episodes)."""
    from robolearn.apps.eval import evaluate

    result, out, report = evaluate(args.checkpoint, args.episodes, out=args.out, seed_start=args.seed_start,
                                   n_envs=args.n_envs, use_ema=not args.no_ema, num_inference_steps=args.ddim_steps,
                                   n_action_steps=args.action_steps, videos=args.videos, backend=args.backend)
    lo, hi = result["success_ci95"]
    print(f"success rate {result['success_rate']:.3f} ({result['n_success']}/{result['n_episodes']}), "
          f"95% CI [{lo:.3f}, {hi:.3f}], mean episode length {result['mean_episode_length']:.1f}; "
          + "".join(f"{k.replace('_', ' ')} {v:.3f}, " for k, v in result.items() if k.startswith("mean_max_"))
          + f"{result['wall_s']:.0f} s -> {out}; report {report}")
    return 0


def cmd_deploy(args) -> int:
    """``robolearn deploy CHECKPOINT --robot NAME``: policy episodes through the HAL; JSON report."""
    from robolearn.apps.deploy import deploy_and_save

    result, out = deploy_and_save(args.checkpoint, robot=args.robot, episodes=args.episodes, out=args.out,
                                  seed_start=args.seed_start, realtime=not args.no_realtime,
                                  num_inference_steps=args.ddim_steps, use_ema=not args.no_ema,
                                  backend=args.backend, pin_cpus=not args.no_pin_cpus)
    lo, hi = result["success_ci95"]
    lat = result["loop"]["lateness"]
    print(f"success rate {result['success_rate']:.3f} ({result['n_success']}/{result['n_episodes']}), "
          f"95% CI [{lo:.3f}, {hi:.3f}]; loop {result['rate_hz']:.0f} Hz wake-up lateness p99 "
          f"{lat.get('p99_us', float('nan')):.1f} us, {result['loop']['missed_deadlines']} missed deadlines "
          f"({result['loop']['realtime_note']}; {result['cpu_pinning']['note']}); {result['wall_s']:.0f} s -> {out}")
    age = result.get("obs_age_ms") or {}
    if age:
        print(f"observation age (capture -> policy input) p50 {age['p50']:.1f} ms, p99 {age['p99']:.1f} ms over "
              f"{age['chunks']} chunks; cameras " + ", ".join(f"{n} {c['frames']} frames ({c['mean_fps']:.1f}/s)"
                                                             for n, c in result["cameras"].items()))
    return 0


def cmd_export(args) -> int:
    """``robolearn export CHECKPOINT --format onnx``: a self-contained model + JSON sidecar, checked against eager torch."""
    from robolearn.apps.export import export_checkpoint

    r = export_checkpoint(args.checkpoint, args.format, out=args.out, num_inference_steps=args.num_inference_steps,
                          batch=args.batch, use_ema=not args.no_ema)
    kind = "DDIM" if r["policy_type"] == "diffusion" else "consistency"
    steps = f", {r['num_inference_steps']} {kind} step(s) unrolled" if r["num_inference_steps"] else ""
    diff = (f"max |onnxruntime - eager| {r['max_abs_diff']:.2e} (raw action units)" if r["max_abs_diff"] is not None
            else r["parity_note"])
    print(f"exported {r['policy_type']} policy (batch {r['batch']}{steps}) in {r['export_s']:.1f} s -> {r['model']} "
          f"(sidecar {r['sidecar']}); {diff}")
    return 0


def cmd_record(args) -> int:
    """``robolearn record --robot sim --device keyboard``: teleoperated episodes into a Zarr store."""
    from robolearn.apps.record import record_with_device

    print("recording: c start, s stop and keep, Backspace discard, q quit; "
          "move i/k j/l u/o (x y z), y/h yaw, space gripper" if args.device == "keyboard" else
          "recording: c start, s stop and keep, Backspace discard, q quit; move the leader arm" if args.device == "leader"
          else "recording: see `robolearn record --help` for the device's buttons", flush=True)
    result = record_with_device(args.robot, args.device, args.out, fps=args.fps, append=args.append,
                                seed_start=args.seed_start, realtime=not args.no_realtime,
                                leader_port=args.leader_port, device_kwargs={"config": args.leader_config}
                                if args.device == "leader" else None)
    print(f"{result['committed']} episode(s) kept, {result['discarded']} discarded; "
          f"{result['episodes']} in {result['path']}")
    return 0


def cmd_replay(args) -> int:
    """``robolearn replay STORE --episode N``: play a recorded episode back through the loop."""
    from robolearn.apps.replay import replay

    result = replay(args.store, args.episode, args.robot, realtime=not args.no_realtime)
    extra = "" if result["success"] is None else f", task success {result['success']}"
    err = "" if result["final_target_error_m"] is None else f", final target error {1e3 * result['final_target_error_m']:.1f} mm"
    print(f"replayed episode {result['episode']} ({result['steps']} steps, "
          f"{'absolute targets' if result['absolute'] else 'relative actions'}){extra}{err}; "
          f"faults {result['faults'] or 'none'}")
    return 0


def cmd_calibrate(args) -> int:
    """``robolearn calibrate --robot so101 --port PORT``: guided calibration of an SO-100/101 arm."""
    from robolearn.apps.calibrate import calibrate

    r = calibrate(args.robot, port=args.port, out=args.out, force=args.force, margin_rad=args.margin)
    dirs = ", ".join(f"{n} {c['direction']:+d}" for n, c in zip(r["joint_names"], r["calibration"]))
    print(f"calibration written to {r['path']} (port {r['port']}; directions {dirs}); use it with "
          f"--robot {r['path']} (a leader: --leader-config {r['path']})")
    return 0


def cmd_convert(args) -> int:
    """``robolearn convert SRC DST``: LeRobot v3 <-> Zarr, robomimic HDF5 -> Zarr (see robolearn.apps.convert)."""
    from robolearn.apps.convert import convert

    out = convert(args.src, args.dst, src_format=args.src_format, dst_format=args.dst_format,
                  overwrite=args.overwrite, rename=args.rename or (), image_codec=args.image_codec,
                  vcodec=args.vcodec, progress=not args.no_progress)
    if "delegated" in out:
        return out["returncode"]
    print(f"converted {out['src']} ({out['from']}) -> {out['dst']} ({out['to']}): {out['episodes']} episodes, "
          f"{out['steps']} steps")
    return 0


def cmd_quickstart(args) -> int:
    """``robolearn quickstart``: collect → train → evaluate → report, each step resumable."""
    from robolearn.apps.quickstart import quickstart

    done = quickstart(args.out, args.overrides)
    result = done["eval"]
    lo, hi = result["success_ci95"]
    print(f"\nsuccess rate {result['success_rate']:.3f} ({result['n_success']}/{result['n_episodes']}), "
          f"95% CI [{lo:.3f}, {hi:.3f}]; total {done['timings']['total_s']:.0f} s")
    print(f"report: {done['report'] / 'report.md'}")
    return 0


# ------------------------------------------------------------------ entry point


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of every command."""
    p = argparse.ArgumentParser(prog="robolearn", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    q = sub.add_parser("quickstart", help="collect demos, train, evaluate and report on the default task")
    q.add_argument("--out", default="runs/quickstart", help="output folder (default: %(default)s)")
    q.add_argument("overrides", nargs="*", help="config overrides, e.g. train.steps=500")
    q.set_defaults(fn=cmd_quickstart)

    c = sub.add_parser("collect", help="record scripted-expert demonstrations (or a trained policy's rollouts) "
                       "into a Zarr store")
    c.add_argument("--task", help="task (default: lift; with --policy, the policy's)")
    c.add_argument("--policy", metavar="CHECKPOINT",
                   help="record this trained policy's rollouts instead of the scripted expert's (needs --out; "
                        "e.g. to distil a student on the states it reaches: DAgger)")
    c.add_argument("--episodes", type=int, required=True, help="episodes to attempt")
    c.add_argument("--out", help="store path (default: data.path of the config)")
    c.add_argument("--seed-start", type=int, default=0)
    c.add_argument("--keep-failed", action="store_true", help="also keep episodes the expert failed")
    c.add_argument("--cameras", nargs="+", metavar="CAMERA",
                   help="also record these cameras as <camera>_image keys (e.g. agentview)")
    g = c.add_mutually_exclusive_group()
    g.add_argument("--append", action="store_true", help="add episodes to an existing store")
    g.add_argument("--overwrite", action="store_true", help="replace an existing store")
    c.add_argument("overrides", nargs="*", help="config overrides, e.g. task.max_episode_steps=200")
    c.set_defaults(fn=cmd_collect)

    t = sub.add_parser("train", help="train a policy (resumes a killed run with the same command)")
    t.add_argument("overrides", nargs="*", help="config overrides, e.g. data.path=demos.zarr train=long")
    t.set_defaults(fn=cmd_train)

    rl = sub.add_parser("rl", help="refine a trained policy with residual RL (PPO); resumes a killed run")
    rl.add_argument("base", help="base checkpoint or run directory (diffusion or ACT, state observations)")
    rl.add_argument("overrides", nargs="*", help="RL settings (configs/rl/default.yaml), e.g. rl.n_envs=8 "
                    "rl.total_env_steps=500000; rl=<name> picks another file")
    rl.add_argument("--out", help="run directory (default: <base run>_rl)")
    rl.add_argument("--no-eval", action="store_true", help="skip the final base vs base + residual evaluation")
    rl.set_defaults(fn=cmd_rl)

    ds = sub.add_parser("distill", help="distil a diffusion policy into a 1-3 step consistency policy "
                        "(distill.method=consistency) or a 1-step student of its sampler (distill.method=direct); "
                        "resumes a killed run")
    ds.add_argument("checkpoint", help="teacher checkpoint or run directory (a diffusion policy)")
    ds.add_argument("overrides", nargs="*", help="distillation settings (configs/distill/default.yaml), e.g. "
                    "distill.steps=4000 distill.num_inference_steps=2; distill=<name> picks another file")
    ds.add_argument("--out", help="run directory (default: <teacher run>_distill)")
    ds.set_defaults(fn=cmd_distill)

    e = sub.add_parser("eval", help="evaluate a checkpoint on held-out seeded episodes")
    e.add_argument("checkpoint", help="checkpoint directory or run directory")
    e.add_argument("--episodes", type=int, default=50)
    e.add_argument("--seed-start", type=int, default=None, help="first seed (default: the config's eval.seed_start)")
    e.add_argument("--n-envs", type=int, default=None, help="parallel env processes (default: the config's)")
    e.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")
    e.add_argument("--ddim-steps", type=int, default=None, help="denoising steps (default: the checkpoint's)")
    e.add_argument("--action-steps", type=int, default=None,
                   help="actions executed per predicted chunk, n_action_steps (default: the checkpoint's)")
    e.add_argument("--backend", default="eager", choices=["eager", "onnxruntime", "compile"],
                   help="inference backend of the policy (default: %(default)s; falls back to eager where missing)")
    e.add_argument("--videos", type=int, default=4, help="record the first N episodes as MP4 (default: %(default)s)")
    e.add_argument("--out", help="JSON output path (default: <run>/eval_<episodes>.json; the report folder "
                                 "is the same path without .json)")
    e.set_defaults(fn=cmd_eval)

    d = sub.add_parser("deploy", help="run a policy on a robot through the HAL (runner, scheduler, safety, loop)")
    d.add_argument("checkpoint", help="checkpoint directory or run directory")
    d.add_argument("--robot", default="sim", help="hardware/<ROBOT>.yaml or a YAML path (default: %(default)s)")
    d.add_argument("--episodes", type=int, default=50)
    d.add_argument("--seed-start", type=int, default=None, help="first seed; the same seeds as `robolearn eval`")
    d.add_argument("--ddim-steps", type=int, default=None, help="denoising steps (default: the checkpoint's)")
    d.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")
    d.add_argument("--no-realtime", action="store_true", help="do not ask for SCHED_FIFO")
    d.add_argument("--no-pin-cpus", action="store_true",
                   help="do not pin the loop to one CPU and the policy process and cameras to the others")
    d.add_argument("--backend", default="eager", choices=["eager", "onnxruntime", "compile"],
                   help="inference backend of the policy process (default: %(default)s; falls back to eager where missing)")
    d.add_argument("--out", help="JSON output path (default: <run>/deploy_<robot>_<episodes>.json)")
    d.set_defaults(fn=cmd_deploy)

    x = sub.add_parser("export", help="export a policy as a self-contained ONNX model (normalizer and DDIM steps "
                       "inside) with a JSON sidecar; checks it against eager torch")
    x.add_argument("checkpoint", help="checkpoint directory or run directory (diffusion, distilled or ACT)")
    x.add_argument("--format", default="onnx", help="export format (default: %(default)s; the only one)")
    x.add_argument("--out", help="model path (default: <run>/export/policy_<K>steps.onnx; the sidecar is the same "
                                 "path with .json)")
    x.add_argument("--num-inference-steps", type=int, default=None,
                   help="DDIM (or consistency) steps unrolled in the graph (default: the checkpoint's)")
    x.add_argument("--batch", type=int, default=1, help="the graph's fixed batch size (default: %(default)s)")
    x.add_argument("--no-ema", action="store_true", help="export the raw weights instead of the EMA weights")
    x.set_defaults(fn=cmd_export)

    r = sub.add_parser("record", help="teleoperate a robot and record episodes (c start, s stop, Backspace "
                       "discard, q quit)")
    r.add_argument("--robot", default="sim", help="hardware/<ROBOT>.yaml or a YAML path (default: %(default)s)")
    r.add_argument("--device", default="keyboard", choices=["keyboard", "spacemouse", "gamepad", "leader"],
                   help="teleop device; leader: an SO-100/101 leader arm on --leader-port driving the follower "
                   "in joint space (default: %(default)s)")
    r.add_argument("--leader-port", help="the leader arm's serial port (with --device leader), e.g. /dev/ttyACM1")
    r.add_argument("--leader-config", default="so101_leader",
                   help="the leader's calibration, hardware/<NAME>.yaml or a YAML path (default: %(default)s)")
    r.add_argument("--out", default="data/teleop.zarr", help="store path (default: %(default)s)")
    r.add_argument("--append", action="store_true", help="add episodes to an existing store")
    r.add_argument("--fps", type=float, default=20.0, help="recording rate in Hz (default: %(default)s)")
    r.add_argument("--seed-start", type=int, default=0, help="first scene seed on the twin")
    r.add_argument("--no-realtime", action="store_true", help="do not ask for SCHED_FIFO")
    r.set_defaults(fn=cmd_record)

    rp = sub.add_parser("replay", help="play a recorded episode back through the control loop")
    rp.add_argument("store")
    rp.add_argument("--episode", type=int, default=0)
    rp.add_argument("--robot", default="sim", help="hardware/<ROBOT>.yaml or a YAML path (default: %(default)s)")
    rp.add_argument("--no-realtime", action="store_true", help="do not ask for SCHED_FIFO")
    rp.set_defaults(fn=cmd_replay)

    cb = sub.add_parser("calibrate", help="calibrate an SO-100/101 arm or leader on its Feetech bus (guided "
                        "prompts) and write its robot config")
    cb.add_argument("--robot", default="so101", help="the arm's base config, hardware/<ROBOT>.yaml or a YAML path: "
                    "so101, so101_leader, so100 (default: %(default)s)")
    cb.add_argument("--port", help="the bus's serial port, e.g. /dev/ttyACM0 (default: the config's port)")
    cb.add_argument("--out", help="output YAML (default: hardware/<ROBOT>_calibrated.yaml)")
    cb.add_argument("--force", action="store_true", help="replace --out if it exists")
    cb.add_argument("--margin", type=float, default=0.05,
                    help="rad the written joint limits keep inside the swept end stops (default: %(default)s)")
    cb.set_defaults(fn=cmd_calibrate)

    cv = sub.add_parser("convert", help="convert a dataset: LeRobot v3 <-> Zarr, robomimic HDF5 -> Zarr")
    cv.add_argument("src", help="source: a Zarr store, a LeRobot v3 directory or a robomimic .hdf5 file")
    cv.add_argument("dst", help="destination (must not exist; *.zarr is a Zarr store)")
    cv.add_argument("--from", dest="src_format", choices=["zarr", "lerobot", "robomimic"],
                    help="source format (default: from the path)")
    cv.add_argument("--to", dest="dst_format", choices=["zarr", "lerobot"],
                    help="destination format (default: zarr for *.zarr, else lerobot from a Zarr source)")
    cv.add_argument("--rename", action="append", metavar="OLD=NEW",
                    help="rename a key (LeRobot name=our key when reading LeRobot, our key=LeRobot name when "
                         "writing it); repeatable")
    cv.add_argument("--image-codec", choices=["webp", "png", "jpeg", "jpeg2k"],
                    help="store codec of image keys (Zarr destinations; default webp, lossless)")
    cv.add_argument("--vcodec", default="libsvtav1", choices=["libsvtav1", "h264", "hevc"],
                    help="video codec of LeRobot destinations (default: %(default)s, lerobot's)")
    cv.add_argument("--overwrite", action="store_true", help="replace an existing destination once done")
    cv.add_argument("--no-progress", action="store_true", help="no progress bar")
    cv.set_defaults(fn=cmd_convert)

    i = sub.add_parser("inspect", help="summarize a Zarr episode store")
    i.add_argument("path")
    i.add_argument("--json", action="store_true", help="print one JSON object")
    i.add_argument("--check", action="store_true",
                   help="decode every chunk and list the bad ones (key, chunk file, steps, episodes); exit 1 if any")
    i.set_defaults(fn=cmd_inspect)
    return p


def main(argv=None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse ends a command's `overrides` at its first option: `distill CKPT --out DIR a=1` leaves
    # `a=1` over. Overrides after options are overrides still; anything else is an unknown argument.
    if extra and hasattr(args, "overrides") and not any(e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.debug:
        return args.fn(args)
    from robolearn.utils.errors import RobolearnError

    try:
        return args.fn(args)
    except RobolearnError as exc:
        print(f"robolearn: error: {exc}", file=sys.stderr)
        return 1
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, ValueError) as exc:
        print(f"robolearn: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("robolearn: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an internal error: still one line, traceback behind --debug
        print(f"robolearn: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
