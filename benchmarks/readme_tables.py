"""Write the README's results tables from the benchmark JSON, so no figure is typed by hand.

    python benchmarks/readme_tables.py           # rewrite the blocks in README.md
    python benchmarks/readme_tables.py --check   # exit 1 when README.md differs from the JSON

Reads ``benchmarks/results/{core,policies,hal,recorded,rl,inference,distill,vs_lerobot*}.json``: all but ``recorded`` are
written by ``bench_core.py``, ``bench_policies.py``, ``bench_hal.py``, ``bench_rl.py``, ``bench_inference.py``,
``bench_distill.py`` and ``bench_vs_lerobot.py``; ``recorded.json`` holds figures no
script's current output holds, each with where it was first recorded (an earlier results file, a
commit message, or only the README text of a commit). Each block of README.md between
``<!-- results:NAME:begin -->`` and ``<!-- results:NAME:end -->`` (NAME one of :data:`BLOCKS`) is
replaced with its table; the text between blocks is left alone. Every row names the machine its
figure came from (``M1`` ... in the legend, from the JSON's ``machine``; "—" where none was
recorded) and its source; a row marked † has no benchmark output behind it (README text only).
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
FILES = ("core", "policies", "hal", "recorded", "rl", "inference", "distill", "vs_lerobot", "vs_lerobot_model_step",
         "vs_lerobot_model_step_act")
DAGGER = "†"
GL_NAMES = {"osmesa": "OSMesa", "egl": "EGL", "glfw": "GLFW"}


def wilson(successes: int, n: int) -> tuple[float, float]:
    """95 % Wilson interval of ``successes`` out of ``n`` (robolearn.eval.metrics, as every eval reports)."""
    sys.path.insert(0, str(ROOT))
    from robolearn.eval.metrics import wilson_interval

    return wilson_interval(successes, n)


def load_results(results_dir: Path = RESULTS) -> dict:
    """The four results files as ``{"core": ..., "policies": ..., "hal": ..., "recorded": ...}``.

    Raises:
        FileNotFoundError: a results file is missing.
    """
    return {name: json.loads((results_dir / f"{name}.json").read_text()) for name in FILES}


# --- formatting -----------------------------------------------------------------------------------

def n(x: float, digits: int = 0) -> str:
    """``x`` with thousands separators and ``digits`` decimals: ``n(5555.0) == "5,555"``."""
    return f"{x:,.{digits}f}"


def ci(lo: float, hi: float) -> str:
    """An interval as ``[0.60, 0.84]`` (two decimals)."""
    return f"[{lo:.2f}, {hi:.2f}]"


def success(entry: dict) -> str:
    """``0.74 [0.60, 0.84]`` from ``n_success``/``n_episodes`` or ``success_rate``/``success_ci95``."""
    if "n_success" in entry:
        k, m = entry["n_success"], entry["n_episodes"]
        return f"{k / m:.2f} {ci(*wilson(k, m))}"
    return f"{entry['success_rate']:.2f} {ci(*entry['success_ci95'])}"


def minutes(seconds: float) -> str:
    """Seconds as ``8.9 min``."""
    return f"{seconds / 60:.1f} min"


def params(entry: dict) -> str:
    """An entry's ``n_params`` in millions: ``4.6 M``."""
    return f"{entry['n_params'] / 1e6:.1f} M"


def plural(k: int, word: str) -> str:
    """``1 overrun``, ``3 overruns``."""
    return f"{k} {word}" if k == 1 else f"{k} {word}s"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table; each row has one cell per header."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


class Machines:
    """Short labels ``M1``, ``M2`` ... for the distinct machines the JSON records, in order of use.

    A machine is its (platform, cpu_count, python, cpu_model); fields recorded by only some files (torch)
    are merged into its legend line."""

    def __init__(self):
        self.known: dict[tuple, dict] = {}

    def label(self, machine: dict | None) -> str:
        if not machine:
            return "—"
        key = (machine.get("platform"), machine.get("cpu_count"), machine.get("python"), machine.get("cpu_model"))
        merged = self.known.setdefault(key, {})
        merged.update({k: v for k, v in machine.items() if v is not None})
        return f"M{list(self.known).index(key) + 1}"

    def legend(self) -> list[str]:
        out = []
        for i, m in enumerate(self.known.values()):
            torch = f", torch {m['torch']} (recorded in core.json)" if "torch" in m else ""
            cpu = f" ({m['cpu_model']})" if "cpu_model" in m else ""
            out.append(f"- **M{i + 1}**: {m['cpu_count']} CPU cores{cpu}, `{m['platform']}`, Python {m['python']}{torch}; "
                       "no GPU")
        return out


def source(rec: dict) -> str:
    """Where a recorded.json entry came from, as a table cell (``†`` when only the README had it)."""
    src = rec["source"]
    srcs = src if isinstance(src, list) else [src]
    parts = []
    for s in srcs:
        if "readme" in s:
            parts.append(f"README at {s['readme']} {DAGGER}")
        elif "message" in s:
            parts.append(f"commit {s['message']} message")
        elif "commits" in s:
            parts.append(f"{Path(s['file']).name} at {', '.join(s['commits'])}")
    if isinstance(src, dict) and "readme_only" in src:
        parts.append(f"{src['readme_only']}: README only {DAGGER}")
    return "; ".join(parts)


def policy_source(entry: dict) -> str:
    """``policies.json``, or ``policies.json at COMMIT`` for an entry transcribed from an earlier output."""
    src = entry.get("source")
    return f"policies.json at {src['commit']}" if src else "policies.json"


# --- blocks ---------------------------------------------------------------------------------------

def block_machines(data: dict, machines: Machines) -> str:
    """The machine legend; the tables' blocks must be rendered first (they register the machines)."""
    return "\n".join([
        "Each row names the machine its figure was measured on (from the results JSON) and its source:",
        "the file under `benchmarks/results/` (`recorded.json` for figures no benchmark's current output",
        "holds, with the commit they were first recorded in). "
        f"{DAGGER}: no benchmark output was kept; the figure is as first written in the README at that commit.",
        "",
        *machines.legend(),
        "- **—**: not recorded",
    ])


def block_main(data: dict, machines: Machines) -> str:
    """Quickstart, training/inference speed and simulation figures (core.json, recorded.json, hal.json).

    Raises:
        KeyError: a results file lacks a field a row shows.
    """
    core, rec, hal = data["core"], data["recorded"]["entries"], data["hal"]
    m = machines.label(core["machine"])
    tr, hist = core["training"], rec["core_history"]
    earlier = hist["runs"]
    qs, qe, long_, ex = rec["quickstart"], rec["quickstart_eval_100"], rec["lift_long"], rec["lift_expert"]
    ins, pt, il, ip = core["env_insertion"], core["env_pusht"], core["images_lift"], core["images_pusht"]
    pts = rec["pusht_speed_notes"]
    deploy_p50 = hal["deploy_vs_eval"]["deploy"]["policy_latency_ms"]["p50"]
    hist_src = f"{m} · core.json; earlier: {source(hist)}"
    machines.label(hist["machine"])

    def rate_ci(e):
        k, t = e["n_success"], e["n_episodes"]
        return f"{k / t:.2f}", f"{k}/{t}, 95 % CI {ci(*wilson(k, t))}"

    r, c = rate_ci(qs)
    mins, secs = divmod(qs["wall_s"], 60)
    r100, c100 = rate_ci(qe)
    rl, cl = rate_ci(long_)
    re_, ce = rate_ci(ex)
    codecs = il["codecs"]
    raw = codecs["webp"]["raw_bytes_per_frame"]
    h, w = il["shape"][:2]
    rows = [
        [f"`make quickstart` (after set-up): {qs['demos']} scripted Lift demos → {n(qs['train_steps'])} training steps "
         f"→ {qs['n_episodes']} held-out episodes",
         f"**{r}** success ({c}) in **{mins} min {secs:02d} s** wall-clock (collect {qs['collect_s']} s, train "
         f"{qs['train_s']} s, eval {qs['eval_s']} s)", f"— · {source(qs)}"],
        ["`robolearn eval` of that checkpoint on 100 held-out episodes", f"**{r100}** ({c100}), {qe['eval_wall_s']} s",
         f"— · {source(qe)}"],
        [f"`robolearn train train=long` ({n(long_['train_steps'])} steps, {long_['train_wall_min']} min) on "
         f"{long_['demos']} demos, then `eval --episodes {long_['n_episodes']}` ({long_['note']})",
         f"{rl} ({cl}); {long_['finding']}", f"— · {source(long_)}"],
        [f"Scripted Lift expert, {ex['n_episodes']} seeds", f"{re_} ({ex['n_success']}/{ex['n_episodes']}), mean "
         f"{ex['mean_episode_length']} steps", f"— · {source(ex)}"],
        [f"Training throughput, default U-Net ({params(tr)} params, batch {tr['batch_size']})",
         f"{n(tr['train_samples_per_s'])} samples/s (earlier runs: "
         f"{', '.join(n(e['train_samples_per_s']) for e in earlier)})", hist_src],
        [f"`predict_action`, batch 1, {tr['num_inference_steps']} DDIM steps, {core['machine']['torch_threads']} threads",
         f"{n(tr['predict_action_ms_median'])} ms median, {n(tr['predict_action_ms_p95'])} ms p95 (earlier runs: "
         f"{', '.join(n(e['predict_action_ms_median']) for e in earlier)} ms median); in deploy (one thread, its own "
         f"process) a chunk takes p50 {n(deploy_p50)} ms from observation to actions", f"{hist_src}; hal.json"],
        ["robosuite Lift adapter", f"{n(core['env']['env_steps_per_s'])} env steps/s (one core), reset "
         f"{core['env']['reset_ms']:.1f} ms (earlier runs: {', '.join(n(e['lift_env_steps_per_s']) for e in earlier)})",
         hist_src],
        ["our insertion task (plain MuJoCo, `task=insertion`)",
         f"{n(ins['env_steps_per_s'])} env steps/s with random actions, {n(ins['env_steps_per_s_expert'])} with the "
         f"scripted expert grasping and inserting (one core), reset {ins['reset_ms']} ms; expert {ins['expert_success']} "
         f"(earlier run: {n(earlier[-1]['insertion_env_steps_per_s'])} and "
         f"{n(earlier[-1]['insertion_env_steps_per_s_expert'])})", hist_src],
        ["our PushT (`task=pusht`, coverage by exact polygon intersection each step)",
         f"{n(pt['env_steps_per_s'])} env steps/s with random actions, {n(pt['env_steps_per_s_expert'])} with the expert "
         f"pushing (contacts), one core; reset {pt['reset_ms']} ms; expert {pt['expert_success']} (since then, as "
         f"commits state: ~{n(pts['env_steps_per_s_expert_approx'])} with the expert, "
         f"{'–'.join(n(v) for v in pts['env_steps_per_s_random'])} with random actions)", f"{m} · core.json; {source(pts)}"],
        [f"camera frame, {h}×{w}, {GL_NAMES.get(il['mujoco_gl'], il['mujoco_gl'])} (CPU)",
         f"Lift {il['camera']} {n(il['render_ms_per_frame'])} ms (robosuite's scene), PushT {ip['camera']} "
         f"{ip['render_ms_per_frame']:.1f} ms ({ip['shape'][0]}×{ip['shape'][1]}), insertion "
         f"~{rec['render_insertion']['render_ms_per_frame_approx']} ms",
         f"{m} · core.json; insertion: {source(rec['render_insertion'])}"],
        [f"image keys in the store (Lift {il['camera']} {h}×{w}, raw {n(raw)} B)",
         f"WebP lossless {n(codecs['webp']['bytes_per_frame'])} B/frame, {n(codecs['webp']['decode_frames_per_s'])} "
         f"frames/s decode (default); PNG {n(codecs['png']['bytes_per_frame'])} B, "
         f"{n(codecs['png']['decode_frames_per_s'])}/s; JPEG q90 {n(codecs['jpeg']['bytes_per_frame'])} B, "
         f"{n(codecs['jpeg']['decode_frames_per_s'])}/s, mean error {codecs['jpeg']['mean_abs_error']:.1f}/255; "
         f"JPEG 2000 {n(codecs['jpeg2k']['bytes_per_frame'])} B, {n(codecs['jpeg2k']['decode_frames_per_s'])}/s, "
         f"error {codecs['jpeg2k']['mean_abs_error']:.1f}/255", f"{m} · core.json"],
    ]
    return table(["what", "figure", "machine · source"], rows)


#: Learning-table rows: (task, policy, observations, entry, training text or None, extra, published).
#: ``entry`` is a policies.json key, or ``recorded:KEY[:i]`` for recorded.json (``i``: an index in its
#: ``evals``). The training text's ``{steps}``, ``{batch}``, ``{min}`` come from the entry; a ``*``
#: marks a run that shared the two cores with other jobs (as the README at 74543c2 marked them).
KP = "pusher + block keypoints"
LEARNING_ROWS = [
    ("Lift", "diffusion, 4.6 M (`make quickstart`)", "state", "recorded:quickstart",
     "{steps} steps × {batch}, {min}", "; {eval100} on 100 seeds", "DP 1.00"),
    ("Lift", "diffusion, {params} (`task=lift_image policy=diffusion_image`)", "agentview + wrist 84×84, proprio",
     "lift_image_diffusion", "{steps} × {batch}, {min}*", "", "DP (image) 1.00"),
    ("Lift", "ACT, {params} (`policy=act_small`, lr 3e-4)", "state", "lift_act_long", "{steps} × {batch}, {min}*", "",
     "ACT 0.90 (transfer-cube, scripted)"),
    ("Lift", "ACT, {params} (lr 1e-4)", "state", "lift_act", "{steps} × {batch}, {min}", "", ""),
    ("Lift", "the same ACT checkpoint with temporal ensembling (k = 0.01)", "state", "recorded:lift_act_temporal_ensemble",
     None, "", ""),
    ("Can", "diffusion, 4.6 M", "state", "recorded:can_diffusion_4k", "{steps} × {batch}, 17.7 min*", "", "DP 1.00"),
    ("Can", "the same run continued to 8,000 steps (cosine schedule restarted at step 4,000)", "state", "can_diffusion",
     "{steps} × {batch}, {min} (first half*)", "", "DP 1.00"),
    ("Can", "ACT, {params} (`policy=act_small`, lr 3e-4)", "state", "can_act", "{steps} × {batch}, {min}", "", "—"),
    ("PushT", "diffusion, {params}, executing {chunk} actions per chunk (`eval --action-steps {chunk}`)", KP,
     "pusht_diffusion", "{steps} × {batch} (the run below continued from 22,000, cosine decay re-targeted), {min} in "
     "all (107 min for the last 34,000 steps, alone)", "; mean max coverage {coverage}, mean length {length}",
     "DP 0.91 (CNN, state); LeRobot's DP reproduction 0.64"),
    ("PushT", "the 56,000-step checkpoint, {chunk} actions per chunk ({eval_s} s to evaluate)", KP,
     "recorded:pusht_56k_evals:0", None, "; mean max coverage {coverage}", ""),
    ("PushT", "the 56,000-step checkpoint, {chunk} actions per chunk (the default, {eval_s} s)", KP,
     "recorded:pusht_56k_evals:1", None, "; mean max coverage {coverage}", ""),
    ("PushT", "the same run at 22,000 steps, {chunk} actions per chunk", KP, "pusht_diffusion_22k",
     "{steps} × {batch}, ~63 min undisturbed ({min}*)", "; mean max coverage {coverage}", ""),
    ("PushT", "the 22,000-step checkpoint, {chunk} action per chunk (`eval --action-steps {chunk}`, {eval_s} s to "
     "evaluate)", KP, "recorded:pusht_22k_evals:0", None, "; mean max coverage {coverage}", ""),
    ("PushT", "the 22,000-step checkpoint, {chunk} actions per chunk (`eval --action-steps {chunk}`)", KP,
     "recorded:pusht_22k_evals:1", None, "; mean max coverage {coverage}", ""),
    ("PushT (last session)", "diffusion, {params}", "pusher + block pose (x, y, cos θ, sin θ)", "pusht_diffusion_pose_5k",
     "{steps} × {batch}, {min}*", " (5 ms physics steps, before the switch to 10 ms)", ""),
    ("PushT in gym-pusht (the peers' env)", "ACT, {params} (`policy=act_small`, lr 3e-4), 10 of 20 actions per chunk",
     "agent_pos + T keypoints (DP's low-dim)", "gym_pusht_act", "{steps} × {batch}, {min}*",
     "; mean max score {score}, mean length {length}",
     "— for ACT; on this env DP 0.91 (state CNN) / 0.84 (image, avg), LeRobot's DP 0.64"),
    ("Square", "diffusion, {params}, 218 scripted demos (`train=long train.steps=20000 train.compile=true`, 2 threads)",
     "state", "square_diffusion", "{steps} × {batch}, {min} (~62 min undisturbed; the first 10 min shared*)",
     "; mean length {length} (limit 400); val loss flat over the last 5,000 steps (0.0049 at 15,000 and at "
     "20,000, the cosine's tail): 2.5× the steps took it from 0.50 to 0.74, the next lever is a longer schedule "
     "or more demos", "DP 0.92 (avg) / 0.98 (max), ph"),
    ("Square", "the same recipe, `train.steps=8000`, 1 thread", "state", "square_diffusion_8k",
     "{steps} × {batch}, {min} on 1 thread*",
     "; mean length {length} (limit 400); val loss still falling (0.0077 → 0.0068 over the last 2,000 steps): steps",
     ""),
    ("insertion", "diffusion, {params}", "state", "insertion_diffusion", "{steps} × {batch}, {min}", "", "— (ours)"),
    ("insertion", "ACT, {params} (`policy=act_small`, lr 3e-4)", "state", "insertion_act", "{steps} × {batch}, {min}", "",
     "— (ours)"),
    ("so101_pick", "diffusion, {params} (`task=so101_pick`)", "state (joints, gripper, EEF, cube pose, disc centre)",
     "so101_pick_diffusion", "{steps} × {batch}, {min}", "; mean length {length} (limit 200): with the cube's pose "
     "given, still half the seeds fail: not only the pixels make this task hard at these budgets", "— (ours)"),
    ("so101_pick", "the same run continued to 6,000 steps (cosine schedule restarted at step 3,000)",
     "state (joints, gripper, EEF, cube pose, disc centre)", "so101_pick_diffusion_6k", "{steps} × {batch}, {min} in all",
     "; mean length {length}", ""),
    ("so101_pick", "diffusion, {params} (`task=so101_pick_image policy=diffusion_image policy.vision.crop=[84,84]`)",
     "top + wrist 96×96, joints + gripper", "so101_pick_image_diffusion", "{steps} × {batch}, {min}*",
     "; mean length {length} (limit 200): in the evaluation videos the arm reaches to about where the cube is, "
     "closes beside it, and carries nothing to the disc: the cube's position is not read precisely enough at "
     "this budget (Lift's image one)", "— (ours)"),
]

#: policies.json entries shown in bold (the best of each task and policy family)
BOLD = {"recorded:quickstart", "lift_image_diffusion", "lift_act_long", "can_diffusion", "pusht_diffusion"}


def learning_row(data: dict, machines: Machines, spec: tuple) -> list[str]:
    """One learning-table row from a :data:`LEARNING_ROWS` spec.

    Raises:
        KeyError: the spec names an entry the results lack.
    """
    task, policy, obs, key, training, extra, published = spec
    rec = data["recorded"]["entries"]
    if key.startswith("recorded:"):
        _, name, *idx = key.split(":")
        parent = rec[name]
        ev = parent["evals"][int(idx[0])] if idx else {}
        entry = {**parent, **ev}
        where = "; ".join(([source(ev)] if "source" in ev else []) + [source(parent)])
        where = f"{machines.label(parent['machine'])} · {where}"
    else:
        entry = data["policies"]["entries"][key]
        where = f"{machines.label(entry.get('machine'))} · {policy_source(entry)}"
    if "checkpoint_of" in entry:  # an evaluation of a policies.json run's checkpoint
        entry = {"demos": data["policies"]["entries"][entry["checkpoint_of"]]["demos"], **entry}
    fields = {
        "params": params(entry) if "n_params" in entry else "",
        "chunk": entry.get("n_action_steps", entry.get("eval_options", {}).get("n_action_steps", "")),
        "eval_s": n(entry["eval_wall_s"]) if entry.get("eval_wall_s") is not None else "",
        "steps": n(entry["train_steps"]) if "train_steps" in entry else "",
        "batch": entry.get("batch_size", ""),
        "min": minutes(entry.get("train_wall_s", entry.get("train_s", 0))),
        "coverage": f"{entry['mean_max_coverage']:.3f}" if entry.get("mean_max_coverage") is not None else "",
        "score": f"{entry['mean_max_score']:.3f}" if entry.get("mean_max_score") is not None else "",
        "length": n(entry.get("mean_episode_length") or 0),
        "eval100": success(rec["quickstart_eval_100"]) if key == "recorded:quickstart" else "",
    }
    figure = success(entry)
    if key in BOLD:  # the rate in bold, not its interval
        rate, interval = figure.split(" ", 1)
        figure = f"**{rate}** {interval}"
    return [task, policy.format(**fields), obs, str(entry["demos"]), training.format(**fields) if training else "same",
            figure + extra.format(**fields), published, where]


def block_learning(data: dict, machines: Machines) -> str:
    """The learning benchmark: one row per :data:`LEARNING_ROWS` spec (policies.json, recorded.json)."""
    rows = [learning_row(data, machines, spec) for spec in LEARNING_ROWS]
    return table(["task", "policy", "observations", "demos", "training", "success (50 seeds)", "published",
                  "machine · source"], rows)


def block_pusht_chunks(data: dict, machines: Machines) -> str:
    """PushT at step 12,500 per actions per chunk (recorded.json; README only)."""
    e = data["recorded"]["entries"]["pusht_12k5_chunks"]
    rows = []
    for ev in e["evals"]:
        note = f" ({ev['note']})" if ev.get("note") else ""
        cov = f"{ev['mean_max_coverage']:.2f}" if ev["mean_max_coverage"] is not None else "—"
        rows.append([str(ev["n_action_steps"]), f"{ev['n_success']}/{ev['n_episodes']}{note}", cov])
    return (table(["actions per chunk", "success", "mean max coverage"], rows)
            + f"\n\nMachine {machines.label(e['machine'])} · {source(e)}.")


def block_hal(data: dict, machines: Machines) -> str:
    """The HAL figures: loop lateness (µs), stalls, watchdog and link-loss latencies (ms), deploy vs eval."""
    hal, rec = data["hal"], data["recorded"]["entries"]
    m = f"{machines.label(hal['machine'])} · hal.json"
    f, nf, st, wd = hal["loop_fifo"], hal["loop_no_fifo"], hal["stall"], hal["watchdog"]
    pc, hs, dv = hal["link_loss_pulled_cable"], hal["link_loss_hung_server"], hal["deploy_vs_eval"]
    rp = rec["hal_stall_repeats"]

    def lateness(run):
        la = run["lateness"]
        return (f"p50 {la['p50_us']:.1f} µs, p99 {la['p99_us']:.1f} µs, p99.9 {la['p999_us']:.1f} µs, "
                f"max {la['max_us']:.0f} µs")

    def slot(d):
        return f" (slot {1e3 / d['policy_hz']:.0f} ms)" if "policy_hz" in d else ""

    step = f["step_time"]
    rows = [
        [f"{f['seconds']:.0f} s, SCHED_FIFO + `gc.freeze()`",
         f"wake-up lateness {lateness(f)}; {f['overruns']} of {n(f['steps'])} periods overran (step p50 "
         f"{step['p50_us'] / 1e3:.2f} ms, p99 {step['p99_us'] / 1e3:.2f} ms, max {step['max_us'] / 1e3:.1f} ms)", m],
        [f"{nf['seconds']:.0f} s, default scheduler", f"lateness {lateness(nf)}; {plural(nf['overruns'], 'overrun')}", m],
        [f"{st['seconds']:.0f} s with {st['stalled_chunks']} injected {st['stall_s'] * 1e3:.0f} ms policy stalls",
         f"{st['dry_periods']} dry periods, {st['overruns_during_stalls']} overruns during the stalls "
         f"({plural(st['overruns_outside_stalls'], 'overrun')}, {st['missed_deadlines']} missed deadlines elsewhere, "
         f"from the loop's own work), {st['stale_dropped']} stale actions dropped and counted, fastest command "
         f"{st['max_command_speed_m_s']:.2f} m/s (limit {st['eef_speed_limit_m_s']:.2f} m/s)", m],
        *[[f"the same {where}, CPU pinning {label}, two 30 s runs",
           "missed deadlines per second inside / outside the stall windows: " + "; ".join(
               f"{r['misses_per_s_in_stalls']:.1f} / {r['misses_per_s_outside']:.1f}" for r in runs)
           + f" (bar: inside no higher than outside); policy latency p50 "
           + " / ".join(f"{r['policy_latency_ms']['p50']:.0f}" for r in runs) + " ms",
           f"{machines.label(runs[0]['machine'])} · hal.json"]
          for where, kind in (("on a quiet machine", "quiet"), ("on a shared machine (a training job on the other core)",
                                                                 "shared"))
          for label, keys in (("on (loop on its own CPU)", (f"stall_{kind}_pinned", f"stall_{kind}_pinned_repeat")),
                              ("off", (f"stall_{kind}_no_pin", f"stall_{kind}_no_pin_repeat")))
          for runs in [[hal[k] for k in keys if k in hal]] if runs],
        ["the same, repeated on this VM over a day (same code and settings)",
         f"{', '.join(map(str, rp['overruns'][:-1]))} and {rp['overruns'][-1]} overruns per "
         f"{rp['seconds'][0]}–{rp['seconds'][1]} s, almost all outside the stalls; in the worst the process was not run "
         f"for {rp['worst_unscheduled_ms']} ms despite SCHED_FIFO: the VM's CPU, which a dedicated core (isolcpus) or "
         f"real hardware would remove", f"{machines.label(rp['machine'])} · {source(rp)}"],
        [f"command source stops (watchdog {wd['timeout_s']} s)",
         f"robot holds {wd['hold_beyond_timeout_s'] * 1e3:.2f} ms after the timeout (one period is "
         f"{wd['period_s'] * 1e3:.0f} ms)", m],
        ["socket twin: pulled cable / hung server",
         f"DISCONNECT latched {pc['max_ms']:.1f} ms / {hs['max_ms']:.1f} ms after the fault "
         f"({max(hs['detect_after_last_state_ms']):.1f} ms after the last state), worst of {pc['repeats']} each; "
         f"goal: two periods ({pc['two_periods_ms']:.1f} ms)", m],
        [f"`robolearn deploy` on the twin vs `robolearn eval`, same checkpoint, same {dv['episodes']} seeds",
         f"{dv['deploy']['success_rate']:.2f} vs {dv['eval']['success_rate']:.2f} ({dv['difference_points']:+.0f} "
         f"points); policy latency p50 {dv['deploy']['policy_latency_ms']['p50']:.0f} ms, so each chunk's first "
         f"action is already past and dropped", m],
        *[[f"the same for {what.format(**d)} (`robolearn deploy --robot {d['robot']}`, cameras rendered off the "
           f"loop), same "
           f"{d['episodes']} seeds",
           f"{d['deploy']['success_rate']:.2f} vs {d['eval']['success_rate']:.2f} ({d['difference_points']:+.0f} "
           f"points; bar: within 10); observation age (capture to policy input) p50 "
           f"{d['deploy']['obs_age_ms']['p50']:.0f} ms, p99 {d['deploy']['obs_age_ms']['p99']:.0f} ms; policy latency "
           f"p50 {d['deploy']['policy_latency_ms']['p50']:.0f} ms{slot(d)}; {d['deploy']['stale_dropped']:,} stale "
           f"actions dropped, {d['deploy']['dry_periods']} dry periods, {d['deploy_missed_deadlines']:,} of the 500 Hz "
           f"loop's deadlines missed", f"{machines.label(d['machine'])} · hal.json"]
          for key, what in (("deploy_vs_eval_image", "the Lift image diffusion policy"),
                            ("deploy_vs_eval_image_fast", "the Lift image diffusion policy at "
                             "{num_inference_steps} DDIM steps on ONNX Runtime in both"),
                            ("deploy_vs_eval_so101", "the SO-101 image diffusion policy"))
          for d in [hal.get(key)] if d],
        *[[f"`robolearn deploy` on the twin, {sc['episodes']} episodes: as trained (eager, "
           f"{r0['num_inference_steps'] or 'its own'} DDIM steps) / {r1['num_inference_steps']} step on ONNX Runtime "
           f"({'a distilled student' if r1['checkpoint'] != r0['checkpoint'] else 'the same weights'})",
           f"late chunks (arrived after the next slot's action was due) {r0['chunks_late']} / {r0['chunks']} vs "
           f"{r1['chunks_late']} / {r1['chunks']}; actions dropped per chunk {r0['stale_dropped_per_chunk']:.2f} vs "
           f"{r1['stale_dropped_per_chunk']:.2f} (the first, the observation slot's own, is always past); policy "
           f"latency p50 {r0['policy_latency_ms']['p50']:.0f} vs {r1['policy_latency_ms']['p50']:.0f} ms (slot "
           f"{r0['slot_ms']:.0f} ms); success {r0['success_rate']:.2f} vs {r1['success_rate']:.2f}"
           + (f"; {sc['note']}" if sc.get("note") else ""),
           f"{machines.label(sc['machine'])} · hal.json"]
          for sc in [hal.get("stale_chunks")] if sc and "chunks_late" in next(iter(sc["runs"].values()))
          for r0, r1 in [list(sc["runs"].values())]],
    ]
    return table(["what", "figure", "machine · source"], rows)


def selected(e: dict) -> str:
    """Which residual checkpoint an rl.json entry evaluated: the best validation's, or the last."""
    sel = e.get("selected")
    if sel is None:  # entries written before the run kept its best checkpoint: the last one
        return " (the last checkpoint)"
    if sel["checkpoint"] == "latest":
        return " (the last checkpoint: no validation ran)"
    return (f" (the best validation's: {sel['val_success_rate']:.2f} on {sel['val_episodes']} validation seeds "
            f"after {n(sel['env_steps'])} steps, {minutes(sel['wall_s'])})")


def block_rl(data: dict, machines: Machines) -> str:
    """Residual RL: base vs base + residual on the same held-out seeds, steps, time, throughput (rl.json)."""
    rows = []
    entries = data["rl"]["entries"]
    for name in list(entries):
        e = entries[name]  # (read by key: unshown_entries tracks it)
        # entries written before bench_rl recorded task and base policy were all insertion_<policy>_...
        task, policy = e.get("task", name.split("_")[0]), e.get("base_policy", name.split("_")[1])
        if name.endswith("_sparse"):
            policy += " (sparse reward)"
        b, r, b4 = e["base_eval"], e["residual_eval"], e["base_eval_rl_steps"]
        t = e["time_split_s"]
        busy = sum(t.values()) or 1.0
        base_steps = f" ({b['num_inference_steps']} DDIM steps)" if b.get("num_inference_steps") else ""
        how = [] if not b4 else [f"{b4['num_inference_steps']} DDIM steps" if b4.get("num_inference_steps") else None,
                                 "from x_T = 0" if b4.get("zero_initial_noise") else None,
                                 "raw weights, not EMA" if b4.get("use_ema") is False else None]
        rl_steps = f"; {success(b4)} as RL runs it ({', '.join(h for h in how if h)})" if b4 else ""
        rows.append([task, policy, f"{success(b)}{base_steps}{rl_steps}", success(r),
                     f"{(r['success_rate'] - b['success_rate']) * 100:+.0f} points",
                     f"{n(e['env_steps'])} in {minutes(e['rl_wall_s'])}{selected(e)}",
                     f"{n(e['env_steps_per_s_collect'])} collecting, {n(e['env_steps_per_s_overall'])} overall; "
                     f"env {t['env_s'] / busy:.0%}, base {t['base_s'] / busy:.0%}, residual {t['residual_s'] / busy:.0%}, "
                     f"PPO {t['update_s'] / busy:.0%}",
                     f"{machines.label(e['machine'])} · rl.json"])
    return table(["task", "base", "base (50 held-out seeds)", "base + residual (same seeds)", "gain",
                  "env steps, RL wall time (checkpoint evaluated)",
                  "env steps/s (time split: collection parts in thread time over both collection threads, PPO in wall time)",
                  "machine · source"], rows)


def block_inference(data: dict, machines: Machines) -> str:
    """predict_action latency at batch 1 per policy, backend and thread count (inference.json)."""
    def cell(r):
        if not r:
            return "—"
        if "p50_ms" not in r:
            return f"not run: {r.get('error', '?')}"
        ran = "" if r["backend_ran"] != "eager" or "warning" not in r else " (fell back to eager)"
        return f"{r['p50_ms']:.2f} / {r['p95_ms']:.2f}{ran}"

    rows = []
    for name, e in data["inference"]["entries"].items():
        steps = e["num_inference_steps"] if e.get("num_inference_steps") else "—"
        weights = "untrained" if e["weights"].startswith("untrained") else "trained"
        for backend, res in e["results"].items():
            diff = next((r["max_abs_diff"] for r in res.values() if "max_abs_diff" in r), None)
            rows.append([name, str(steps), weights, backend, cell(res.get("threads_1")), cell(res.get("threads_2")),
                         "—" if diff is None else f"{diff:.0e}", f"{machines.label(e['machine'])} · inference.json"])
    notes = sorted({e["note"] for e in data["inference"]["entries"].values() if e.get("note")})
    return (table(["entry", "DDIM steps", "weights", "backend", "1 thread p50 / p95 (ms)", "2 threads p50 / p95 (ms)",
                   "max abs diff vs eager", "machine · source"], rows)
            + "".join(f"\n\nConditions: {note}." for note in notes))


def block_distill(data: dict, machines: Machines) -> str:
    """Teacher vs distilled students: success on the same held-out seeds and batch-1 latency (distill.json)."""
    def latency(e):
        lat = e["latency_1_thread"]
        cells = [f"{lat[b]['p50_ms']:.2f}" if "p50_ms" in lat.get(b, {}) else "—" for b in ("onnxruntime", "eager")]
        return " / ".join(cells)

    rows = []
    for task, e in data["distill"]["entries"].items():
        m = f"{machines.label(e['machine'])} · distill.json"
        for t in (e.get("teacher_by_actions") or {"": e["teacher"]}).values():
            rows.append([task, "teacher (diffusion, DDIM)", str(t["num_inference_steps"]), str(t["n_action_steps"]),
                         success(t), "—", latency(t), "—", m])
        for name, s in e["students"].items():
            d, sm = s["distill"] or {}, s["summary"] or {}
            how = (f"{d.get('method', 'consistency')}, {n(sm['steps'])} × {d['batch_size']}, "
                   f"{minutes(sm['wall_s_total'])}") if sm and d else "—"
            if d.get("data_path"):  # distilled (in part) on other observations, e.g. its own rollouts (DAgger)
                how += f", last on `{Path(d['data_path']).name}`"
            for r in s["evals"].values():
                rows.append([task, f"`{name}`", str(r["num_inference_steps"]), str(r["n_action_steps"]), success(r),
                             f"{r['points_vs_teacher']:+.0f} points", latency(r), how, m])
    notes = sorted({e["note"] for e in data["distill"]["entries"].values() if e.get("note")})
    return (table(["task", "policy", "network evaluations per chunk", "actions per chunk", "success (same held-out seeds)",
                   "vs teacher (same actions per chunk)",
                   "predict_action p50, 1 thread, ONNX Runtime / eager (ms)", "distillation (method, updates × batch, wall)",
                   "machine · source"], rows)
            + "".join(f"\n\nConditions: {note}." for note in notes))


def block_vs_lerobot(data: dict, machines: Machines) -> str:
    """Training throughput, ours vs lerobot's, same dimensions and machine (vs_lerobot*.json)."""
    def machine(result):
        m = dict(result["machine"])
        m["cpu_count"] = m.pop("cpus", m.get("cpu_count"))
        return machines.label({k: v for k, v in m.items() if k != "load_average_1min"})

    def variant(name):
        return "default config" if not name else f"`{name}`"

    rows = []
    e2e = data["vs_lerobot"]
    for name, o in e2e["ours"].items():
        rows.append([f"{e2e.get('policy', 'diffusion')}, end to end ({e2e['episodes']} episodes of {e2e['task']}, "
                     f"{e2e['steps']} steps)", variant(name),
                     n(o["samples_per_s"]), n(e2e["lerobot"]["samples_per_s"]), f"**{e2e['ratio_samples_per_s'][name]:.2f}×**",
                     f"{o['data_s_per_batch'] * 1e3:.1f} / {e2e['lerobot']['data_s_per_batch'] * 1e3:.1f}",
                     f"{machine(e2e)} · vs_lerobot.json"])
    for key in ("vs_lerobot_model_step", "vs_lerobot_model_step_act"):
        r = data[key]
        for name, o in r["ours"].items():
            first = f"; first step {o['first_step_s']:.0f} s (compilation)" if o.get("compiled") else ""
            rows.append([f"{r.get('policy', 'diffusion')}, model step only (synthetic batch, {r['pairs']} paired runs{first})",
                         variant(name), f"{n(o['median'])} ({n(o['min'])}–{n(o['max'])})",
                         f"{n(r['lerobot']['median'])} ({n(r['lerobot']['min'])}–{n(r['lerobot']['max'])})",
                         f"**{r['ratio_median'][name]:.2f}×**", "—", f"{machine(r)} · {key}.json"])
    r = data["vs_lerobot_model_step"]
    return (table(["measurement", "ours", "ours samples/s", "lerobot 0.4.4 samples/s", "ratio", "data ms/batch (ours / lerobot)",
                   "machine · source"], rows)
            + f"\n\nSame dimensions in both (batch {r['batch']}, {r['threads']} threads; parameters: diffusion U-Net "
              f"{e2e['lerobot']['params']:,} in both, ACT {data['vs_lerobot_model_step_act']['ours']['']['params']:,} ours, "
              f"{data['vs_lerobot_model_step_act']['lerobot']['params']:,} lerobot's); lerobot in its own environment (`.venv-lerobot`, torch "
              f"{e2e['lerobot']['torch']}), ours with torch {r['torch']}. Command: `.venv/bin/python benchmarks/bench_vs_lerobot.py"
              " [--model-step-only [--policy act]] --variant '' --variant 'train.compile=true'`.")


#: block name -> renderer, in render order (the machines legend last: the tables register machines)
BLOCKS = {"main": block_main, "learning": block_learning, "pusht_chunks": block_pusht_chunks, "hal": block_hal,
          "rl": block_rl, "inference": block_inference, "distill": block_distill, "vs_lerobot": block_vs_lerobot,
          "machines": block_machines}


def render_blocks(data: dict) -> dict[str, str]:
    """Markdown of every block in :data:`BLOCKS`, from the loaded results."""
    machines = Machines()
    return {name: fn(data, machines) for name, fn in BLOCKS.items()}


class _Tracked(dict):
    """A dict that remembers which keys were read (to find results no row shows)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


def unshown_entries(data: dict) -> list[str]:
    """``policies.json``/``recorded.json``/``rl.json`` entries that no README row reads, as ``"file:entry"``."""
    tracked = {name: _Tracked(data[name]["entries"]) for name in ("policies", "recorded", "rl")}
    render_blocks({**data, **{name: {**data[name], "entries": t} for name, t in tracked.items()}})
    return sorted(f"{name}:{k}" for name, t in tracked.items() for k in t if k not in t.read)


def render_readme(text: str, data: dict) -> str:
    """``text`` (README.md) with each results block replaced by what ``data`` generates.

    Raises:
        ValueError: a block's begin/end markers are missing or appear more than once.
    """
    for name, body in render_blocks(data).items():
        pattern = re.compile(rf"(<!-- results:{name}:begin -->\n)(?:.*?\n)?(<!-- results:{name}:end -->)", re.S)
        found = pattern.findall(text)
        if len(found) != 1:
            raise ValueError(f"README needs one <!-- results:{name}:begin --> ... <!-- results:{name}:end --> block, "
                             f"found {len(found)}")
        text = pattern.sub(lambda mt: mt.group(1) + body + "\n" + mt.group(2), text)
    return text


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or with ``--check`` compare) the README's results blocks; returns the exit status (1: drift)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="do not write; exit 1 when the README differs")
    p.add_argument("--readme", type=Path, default=README)
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    text = args.readme.read_text()
    new = render_readme(text, load_results(args.results))
    if new == text:
        print(f"{args.readme}: results tables match {args.results}")
        return 0
    if args.check:
        sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), new.splitlines(True), str(args.readme),
                                                   "generated"))
        print(f"{args.readme} differs from {args.results}: run python benchmarks/readme_tables.py", file=sys.stderr)
        return 1
    args.readme.write_text(new)
    print(f"{args.readme}: results tables rewritten from {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
