"""The bad-input table (issue 16): every command fed the mistakes a new user makes, run in-process
through ``robolearn.cli.main``.

Each row is ``(argv, expected exit code, regex)``. The bars every row is held to:

- exit 1 (a ``RobolearnError`` or an input ``OSError``/``ValueError``): stderr is exactly one
  non-empty line, ``robolearn: error: ...``, that matches the regex (which names the key, option or
  file at fault) and never says "internal error" or "Traceback";
- exit 2 (argparse refused the command line): argparse prints its usage lines and then one error
  line; the *last* line is ``robolearn <command>: error: ...`` naming the option and matches the
  regex, every line before it belongs to the usage text (``usage:`` and its indented continuations);
- exit 0 rows are inputs that are not errors but must be flagged (a store holding NaN): the regex
  is matched against stdout;
- whatever the exit, every file of the pre-existing stores, checkpoints and YAMLs (the fixture
  folder) is byte-identical afterwards (sha256 of each file, and no file added or removed), and a
  failed command writes nothing in its working directory.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

TASK = ["task=lift", "task.max_episode_steps=40"]  # the scripted expert needs ~30 steps; the twin of hardware/sim.yaml
TINY_POLICY = ["policy.down_dims=[16,32]", "policy.horizon=8", "policy.n_action_steps=4", "policy.n_groups=4",
               "policy.step_embed_dim=16", "train.batch_size=8", "train.warmup_steps=1", "train.val_every=2",
               "train.ckpt_every=2", "eval.n_envs=1"]


def _tree_sha256(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root``."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> dict[str, str]:
    """The pre-existing files the rows are run against, in one folder:

    ``demos.zarr`` (3 scripted Lift episodes), ``one.zarr`` (1 episode), ``base`` (a tiny
    diffusion run trained for 2 steps on ``demos.zarr``), ``corrupt.zarr`` (``data/action``'s chunk
    truncated to half), ``nan.zarr`` (in ``data/object`` a NaN in episode 1, a train episode, and an
    Inf in episode 2, the validation episode), ``ends.zarr``
    (``meta/episode_ends`` not increasing), checkpoints ``badweights`` (random bytes in both weight
    files), ``wrongweights`` (valid safetensors of other tensors), ``nopolicy`` (no policy.json),
    ``badjson`` (policy.json not JSON), ``badyaml`` (config.yaml not YAML), and robot configs
    ``bad_key.yaml`` (sim.yaml with an unknown key), ``bad_rate.yaml`` (rate_hz: 0), ``garbage.yaml``.

    Returns ``{name: path}`` (plus ``"root"``) for formatting the rows' argv.
    """
    import zarr
    from omegaconf import OmegaConf
    from safetensors.numpy import save_file

    from robolearn.apps.collect import collect_demos
    from robolearn.train.trainer import train
    from robolearn.utils.config import load_config
    from robolearn.utils.paths import hardware_dir

    root = tmp_path_factory.mktemp("bad_input")
    cfg = load_config(TASK)
    collect_demos(cfg.task, root / "demos.zarr", 3, progress=False)
    collect_demos(cfg.task, root / "one.zarr", 1, progress=False)
    train(load_config([*TASK, f"data.path={root / 'demos.zarr'}", f"run_dir={root / 'base'}", "train.steps=2",
                       "data.val_ratio=0.34", *TINY_POLICY]), progress=False)
    ckpt = root / "base" / "checkpoints" / "latest"

    rng = np.random.default_rng(0)
    shutil.copytree(root / "demos.zarr", root / "corrupt.zarr")
    chunk = root / "corrupt.zarr" / "data" / "action" / "0.0"
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
    shutil.copytree(root / "demos.zarr", root / "nan.zarr")
    ends = zarr.open_group(str(root / "nan.zarr"), mode="r+")["meta/episode_ends"][:]
    obj = zarr.open_group(str(root / "nan.zarr"), mode="r+")["data/object"]
    obj[int(ends[0]) + 3, 1] = np.nan  # episode 1: a train episode
    obj[int(ends[1]) + 2, 0] = np.inf  # episode 2: the validation episode
    shutil.copytree(root / "demos.zarr", root / "ends.zarr")
    arr = zarr.open_group(str(root / "ends.zarr"), mode="r+")["meta/episode_ends"]
    arr[:] = arr[:][::-1]

    for name in ("badweights", "wrongweights", "nopolicy", "badjson", "badyaml"):
        shutil.copytree(ckpt, root / name)
    for f in ("model.safetensors", "ema.safetensors"):
        size = (root / "badweights" / f).stat().st_size
        (root / "badweights" / f).write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        save_file({"w": np.zeros((3, 2), np.float32)}, str(root / "wrongweights" / f))
    (root / "nopolicy" / "policy.json").unlink()
    (root / "badjson" / "policy.json").write_text('{"type": "diffusion", "kwargs": ')
    (root / "badyaml" / "config.yaml").write_text("task: [unclosed\n  name: : :\n")

    sim = OmegaConf.load(Path(hardware_dir()) / "sim.yaml")
    OmegaConf.save(OmegaConf.merge(sim, {"bogus_key": 1}), root / "bad_key.yaml")
    OmegaConf.save(OmegaConf.merge(sim, {"rate_hz": 0}), root / "bad_rate.yaml")
    (root / "garbage.yaml").write_text("name: [sim\nrate_hz: {\n")

    paths = {p.name.split(".")[0]: str(p) for p in root.iterdir()}
    return {**paths, "root": str(root), "ckpt": str(ckpt), "nowhere": str(root / "nowhere")}


TRAIN = ["train", *TASK, "data.path={demos}", "run_dir=run", "train.steps=2", *TINY_POLICY]

EVAL = ["--episodes", "1", "--videos", "0"]  # should a row run after all: one short episode, no rendering
DEPLOY = ["--episodes", "1", "--no-realtime"]
YAML_ERR = r"cannot read YAML: while parsing a flow sequence"

# (id, argv with {fixture} placeholders, expected exit code, regex the message must match)
ROWS = [
    # ---- the rows of issue 16's table
    ("train-steps-negative", [*TRAIN, "train.steps=-5"], 1, r"train\.steps=-5: must be an integer >= 1"),
    ("train-batch-0-one-episode", [*TRAIN, "data.path={one}", "train.batch_size=0"], 1,
     r"train\.batch_size=0: must be an integer >= 1"),
    ("train-batch-0", [*TRAIN, "train.batch_size=0"], 1, r"train\.batch_size=0: must be an integer >= 1"),
    ("train-lr-abc", [*TRAIN, "train.lr=abc"], 1, r"train\.lr=abc: must be a number > 0"),
    ("train-steps-abc", [*TRAIN, "train.steps=abc"], 1, r"train\.steps=abc: must be an integer"),
    ("train-obs-keys-empty", [*TRAIN, "task.obs_keys=[]"], 1, r"task\.obs_keys=\[\]: must"),
    ("train-plus-typo", [*TRAIN, "+train.stepz=5"], 1, r"train\.stepz: unknown key .*did you mean train\.steps\?"),
    ("inspect-corrupt-chunk", ["inspect", "{corrupt}"], 1,
     r"corrupt\.zarr: key 'data/action': chunk data/action/0\.0 \(steps 0-\d+, episodes 0-2\) is corrupt"),
    ("inspect-check-corrupt-chunk", ["inspect", "{corrupt}", "--check"], 1, r"corrupt\.zarr: 1 of \d+ chunks do not decode"),
    ("train-corrupt-chunk", [*TRAIN, "data.path={corrupt}"], 1,
     r"corrupt\.zarr: key 'data/action': chunk data/action/0\.0 \(steps 0-\d+, episodes 0-2\) is corrupt"),
    ("inspect-nan", ["inspect", "{nan}"], 0,
     r"object .*NON-FINITE: 1 NaN, 1 Inf in episodes \[1, 2\][^\n]*\n(.*\n)*  warning: NaN/Inf in object"),
    ("inspect-check-nan", ["inspect", "{nan}", "--check"], 0, r"nan\.zarr: all \d+ chunks decode"),  # values are not its job
    ("train-nan", [*TRAIN, "data.path={nan}"], 1,
     r"nan\.zarr: key 'data/object' holds NaN or Inf \(at 2 step\(s\), in episodes \[1, 2\]\); training refuses it"),
    # ---- train: stores and configs
    ("train-missing-store", [*TRAIN, "data.path={nowhere}"], 1, r"nowhere: no such store"),
    ("train-store-is-a-checkpoint", [*TRAIN, "data.path={base}"], 1, r"base: not a zarr store"),
    ("train-bad-episode-ends", [*TRAIN, "data.path={ends}"], 1,
     r"ends\.zarr: key 'meta/episode_ends' must be strictly increasing"),
    ("train-obs-key-not-in-store", [*TRAIN, "task.obs_keys=[nope]"], 1, r"demos\.zarr: missing key 'data/nope'"),
    ("train-into-a-run-of-another-config", [*TRAIN, "run_dir={base}", "train.lr=0.5"], 1,
     r"base holds a run with a different config \(.*train\.lr: 0\.001 -> 0\.5\)"),
    ("train-unknown-key", [*TRAIN, "train.nope=1"], 1, r"train\.nope"),
    ("train-unknown-task", [*TRAIN, "task=nope"], 1, r"Could not find 'task/nope'.*insertion lift"),
    ("train-unknown-policy", [*TRAIN, "policy=nope"], 1, r"Could not find 'policy/nope'.*diffusion"),
    ("train-val-ratio-1", [*TRAIN, "data.val_ratio=1.0"], 1, r"data\.val_ratio=1\.0: must be a number in \[0, 1\)"),
    # ---- inspect
    ("inspect-missing", ["inspect", "{nowhere}"], 1, r"nowhere: no such file or directory"),
    ("inspect-a-yaml-file", ["inspect", "{bad_key}"], 1, r"bad_key\.yaml: not a zarr store"),
    ("inspect-bad-episode-ends", ["inspect", "{ends}"], 1, r"ends\.zarr: key 'meta/episode_ends' must be strictly"),
    # ---- eval: checkpoints and options
    ("eval-missing", ["eval", "{nowhere}", *EVAL], 1, r"nowhere: no such checkpoint"),
    ("eval-random-weights", ["eval", "{badweights}", *EVAL], 1, r"badweights/ema\.safetensors: weights do not fit"),
    ("eval-random-weights-no-ema", ["eval", "{badweights}", "--no-ema", *EVAL], 1,
     r"badweights/model\.safetensors: weights do not fit"),
    ("eval-other-weights", ["eval", "{wrongweights}", *EVAL], 1, r"wrongweights/ema\.safetensors: weights do not fit"),
    ("eval-no-policy-json", ["eval", "{nopolicy}", *EVAL], 1, r"nopolicy: not a checkpoint \(missing policy\.json\)"),
    ("eval-policy-json-not-json", ["eval", "{badjson}", *EVAL], 1, r"badjson/policy\.json: Expecting value"),
    ("eval-config-not-yaml", ["eval", "{badyaml}", *EVAL], 1, r"badyaml/config\.yaml: " + YAML_ERR),
    ("eval-a-store", ["eval", "{demos}", *EVAL], 1, r"demos\.zarr: not a checkpoint \(missing policy\.json\)"),
    ("eval-episodes-0", ["eval", "{base}", "--episodes", "0"], 1, r"episodes must be >= 1, got 0"),
    ("eval-seed-start-negative", ["eval", "{base}", "--seed-start", "-1", *EVAL], 1, r"seed_start must be >= 0, got -1"),
    ("eval-n-envs-0", ["eval", "{base}", "--n-envs", "0", *EVAL], 1, r"n_envs must be >= 1, got 0"),
    ("eval-videos-negative", ["eval", "{base}", "--episodes", "1", "--videos", "-1"], 1, r"n_videos must be >= 0, got -1"),
    ("eval-ddim-steps-0", ["eval", "{base}", "--ddim-steps", "0", *EVAL], 1, r"inference steps must be >= 1, got 0"),
    ("eval-action-steps-99", ["eval", "{base}", "--action-steps", "99", *EVAL], 1, r"n_action_steps must be in \[1, 7\]"),
    ("eval-episodes-abc", ["eval", "{base}", "--episodes", "abc"], 2, r"argument --episodes: invalid int value: 'abc'"),
    # ---- deploy: checkpoints, options, robot configs
    ("deploy-missing", ["deploy", "{nowhere}", *DEPLOY], 1, r"nowhere: no such checkpoint"),
    ("deploy-random-weights", ["deploy", "{badweights}", *DEPLOY], 1, r"badweights/ema\.safetensors: weights do not fit"),
    ("deploy-other-weights", ["deploy", "{wrongweights}", *DEPLOY], 1, r"wrongweights/ema\.safetensors: weights do not fit"),
    ("deploy-no-policy-json", ["deploy", "{nopolicy}", *DEPLOY], 1, r"nopolicy: not a checkpoint \(missing policy\.json\)"),
    ("deploy-policy-json-not-json", ["deploy", "{badjson}", *DEPLOY], 1, r"badjson/policy\.json: Expecting value"),
    ("deploy-config-not-yaml", ["deploy", "{badyaml}", *DEPLOY], 1, r"badyaml/config\.yaml: " + YAML_ERR),
    ("deploy-episodes-0", ["deploy", "{base}", "--episodes", "0", "--no-realtime"], 1, r"episodes must be >= 1, got 0"),
    ("deploy-seed-start-negative", ["deploy", "{base}", "--seed-start", "-1", *DEPLOY], 1, r"seed_start must be >= 0, got -1"),
    ("deploy-ddim-steps-0", ["deploy", "{base}", "--ddim-steps", "0", *DEPLOY], 1, r"inference steps must be >= 1, got 0"),
    ("deploy-unknown-robot", ["deploy", "{base}", "--robot", "nope", *DEPLOY], 1,
     r"unknown robot 'nope': no file .*hardware/nope\.yaml; known robots: \[.*'sim'"),
    ("deploy-robot-yaml-missing", ["deploy", "{base}", "--robot", "{nowhere}.yaml", *DEPLOY], 1,
     r"unknown robot '.*nowhere\.yaml': no file .*/nowhere\.yaml;"),
    ("deploy-robot-unknown-key", ["deploy", "{base}", "--robot", "{bad_key}", *DEPLOY], 1,
     r"bad_key\.yaml: bogus_key: unknown key; driver 'mujoco_twin' takes"),
    ("deploy-robot-rate-0", ["deploy", "{base}", "--robot", "{bad_rate}", *DEPLOY], 1,
     r"bad_rate\.yaml: rate_hz: must be a finite number > 0"),
    ("deploy-robot-not-yaml", ["deploy", "{base}", "--robot", "{garbage}", *DEPLOY], 1, r"garbage\.yaml: " + YAML_ERR),
    # ---- rl: base checkpoints and RL settings
    ("rl-missing-base", ["rl", "{nowhere}", "--no-eval"], 1, r"nowhere: no such checkpoint"),
    ("rl-random-weights", ["rl", "{badweights}", "--no-eval"], 1, r"badweights/ema\.safetensors: weights do not fit"),
    ("rl-no-policy-json", ["rl", "{nopolicy}", "--no-eval"], 1, r"nopolicy: not a checkpoint \(missing policy\.json\)"),
    ("rl-config-not-yaml", ["rl", "{badyaml}", "--no-eval"], 1, r"badyaml/config\.yaml: " + YAML_ERR),
    ("rl-a-store", ["rl", "{demos}", "--no-eval"], 1, r"demos\.zarr: not a checkpoint"),
    ("rl-train-override", ["rl", "{base}", "train.steps=3", "--no-eval"], 1,
     r"train\.steps=3: `robolearn rl` takes rl\.<key>=value overrides"),
    ("rl-n-envs-0", ["rl", "{base}", "rl.n_envs=0", "--no-eval"], 1, r"rl\.n_envs=0: must be an integer >= 1"),
    ("rl-unknown-key", ["rl", "{base}", "+rl.stepz=5", "--no-eval"], 1, r"rl\.stepz: unknown key \(the RLConfig schema"),
    ("rl-unknown-file", ["rl", "{base}", "rl=nope", "--no-eval"], 1, r"rl=nope: no file configs/rl/nope\.yaml"),
    # ---- record: options and robot configs (all refused before the device, robot or store is opened)
    ("record-fps-0", ["record", "--fps", "0"], 1, r"--fps: must be a finite number > 0 \(Hz\), got 0\.0"),
    ("record-fps-nan", ["record", "--fps", "nan"], 1, r"--fps: must be a finite number > 0 \(Hz\), got nan"),
    ("record-fps-not-dividing", ["record", "--fps", "7"], 1, r"--fps: the recording rate 7 Hz must divide .*sim\.yaml: rate_hz"),
    ("record-seed-start-negative", ["record", "--seed-start", "-1"], 1, r"--seed-start: must be an integer >= 0, got -1"),
    ("record-unknown-robot", ["record", "--robot", "nope"], 1, r"unknown robot 'nope'"),
    ("record-robot-unknown-key", ["record", "--robot", "{bad_key}"], 1, r"bad_key\.yaml: bogus_key: unknown key"),
    ("record-robot-rate-0", ["record", "--robot", "{bad_rate}"], 1, r"bad_rate\.yaml: rate_hz: must be a finite number > 0"),
    ("record-unknown-device", ["record", "--device", "nope"], 2, r"argument --device: invalid choice: 'nope'"),
    # ---- replay
    ("replay-missing-store", ["replay", "{nowhere}", "--no-realtime"], 1, r"nowhere: no such file or directory"),
    ("replay-missing-episode", ["replay", "{demos}", "--episode", "99", "--no-realtime"], 1,
     r"demos\.zarr: no episode 99 \(the store has 3\)"),
    ("replay-negative-episode", ["replay", "{demos}", "--episode", "-1", "--no-realtime"], 1, r"demos\.zarr: no episode -1"),
    ("replay-corrupt-chunk", ["replay", "{corrupt}", "--no-realtime"], 1, r"corrupt\.zarr: key 'data/action': chunk data/action/0\.0"),
    ("replay-bad-episode-ends", ["replay", "{ends}", "--no-realtime"], 1, r"ends\.zarr: key 'meta/episode_ends'"),
    ("replay-robot-unknown-key", ["replay", "{demos}", "--robot", "{bad_key}", "--no-realtime"], 1,
     r"bad_key\.yaml: bogus_key: unknown key"),
    # ---- collect
    ("collect-episodes-0", ["collect", "--task", "lift", "--episodes", "0", "--out", "c.zarr"], 1, r"episodes must be >= 1, got 0"),
    ("collect-seed-start-negative", ["collect", "--task", "lift", "--episodes", "1", "--seed-start", "-1", "--out", "c.zarr"],
     1, r"seed_start must be >= 0, got -1"),
    ("collect-unknown-task", ["collect", "--task", "nope", "--episodes", "1", "--out", "c.zarr"], 1, r"Could not find 'task/nope'"),
    ("collect-max-steps-0", ["collect", "--task", "lift", "--episodes", "1", "--out", "c.zarr", "task.max_episode_steps=0"], 1,
     r"task\.max_episode_steps=0: must be an integer >= 1"),
    ("collect-unknown-camera", ["collect", "--task", "lift", "--episodes", "1", "--out", "c.zarr", "--cameras", "nope"], 1,
     r"unknown camera\(s\) \['nope'\]"),
    ("collect-over-a-store", ["collect", "--task", "lift", "--episodes", "1", "--out", "{demos}"], 1,
     r"demos\.zarr: already exists \(use --append to add episodes or --overwrite to replace it\)"),
    ("collect-append-other-task", ["collect", "--task", "pusht", "--episodes", "1", "--out", "{demos}", "--append"], 1,
     r"demos\.zarr: recorded for task 'lift', not 'pusht'"),
    ("collect-append-corrupt-chunk", ["collect", "--task", "lift", "--episodes", "1", "--out", "{corrupt}", "--append"], 1,
     r"corrupt\.zarr: key 'data/action': chunk data/action/0\.0"),
    ("collect-no-episodes", ["collect", "--task", "lift"], 2, r"the following arguments are required: --episodes"),
    # ---- quickstart and the command line itself
    ("quickstart-steps-negative", ["quickstart", "--out", "qs", "train.steps=-5"], 1, r"train\.steps=-5: must be"),
    ("quickstart-plus-typo", ["quickstart", "--out", "qs", "+train.stepz=5"], 1, r"train\.stepz: unknown key"),
    ("no-command", [], 2, r"the following arguments are required: COMMAND"),
    ("unknown-command", ["nope"], 2, r"argument COMMAND: invalid choice: 'nope'"),
    ("train-dash-option", ["train", "--steps", "5"], 2, r"unrecognized arguments: --steps"),
]


@pytest.mark.parametrize("argv,code,pattern", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_input_ends_in_one_line_and_changes_nothing(fx, tmp_path, monkeypatch, capsys, argv, code, pattern):
    """One row of :data:`ROWS`, held to the bars of the module docstring."""
    from robolearn.cli import main

    argv = [a.format(**fx) for a in argv]
    monkeypatch.chdir(tmp_path)
    before = _tree_sha256(Path(fx["root"]))
    try:
        got = main(argv)
    except SystemExit as exc:
        got = exc.code
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    shown = f"exit {got}\nstdout:\n{out[-2000:]}\nstderr:\n{err[-2000:]}"
    assert got == code, shown
    assert "internal error" not in err and "Traceback" not in err, shown
    if code == 0:
        assert re.search(pattern, out), shown
    elif code == 2:
        assert lines and re.match(r"robolearn( \w+)?: error: ", lines[-1]) and re.search(pattern, lines[-1]), shown
        assert lines[0].startswith("usage:") and all(line.startswith(" ") for line in lines[1:-1]), shown
    else:
        assert len(lines) == 1 and lines[0].startswith("robolearn: error: "), shown
        assert re.search(pattern, lines[0]), shown
    assert _tree_sha256(Path(fx["root"])) == before
    if code != 0:
        assert sorted(p.name for p in tmp_path.iterdir()) == [], "a failed command wrote files"


def test_row_ids_are_unique():
    """Every row has its own id (pytest would otherwise suffix duplicates silently)."""
    assert len({r[0] for r in ROWS}) == len(ROWS)
