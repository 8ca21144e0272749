import dataclasses
import inspect
import itertools
import re
import subprocess
import sys
import zipfile

import pytest
import yaml
from omegaconf import OmegaConf

from robolearn.utils import config_schema as schema
from robolearn.utils.config import config_from_yaml, load_config
from robolearn.utils.errors import ConfigError
from robolearn.utils.paths import config_dir

GROUPS = {g: sorted(p.stem for p in (config_dir() / g).glob("*.yaml")) for g in ("task", "policy", "train")}


def test_default_config_composes_groups():
    cfg = load_config()
    assert cfg.task.name == "lift" and cfg.policy.name == "diffusion"
    assert cfg.run_dir == "runs/lift_diffusion" and cfg.data.path == "data/lift_demos.zarr"
    assert cfg.policy.horizon == 16 and cfg.policy.n_obs_steps == 2 and cfg.policy.n_action_steps == 8


def test_overrides_and_group_selection():
    cfg = load_config(["train=long", "policy=diffusion_large", "train.steps=7", "seed=3"])
    assert cfg.train.steps == 7 and cfg.train.warmup_steps == 500 and cfg.train.val_every == 1000 and cfg.seed == 3
    assert list(cfg.policy.down_dims) == [256, 512, 1024] and cfg.policy.horizon == 16


@pytest.mark.parametrize("override,pattern", [
    ("train.nope=1", "train.nope"),
    ("task=nope", "task/nope"),
    ("train.steps", "train.steps"),
])
def test_bad_overrides_raise_config_error(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config([override])


def test_config_is_struct():
    cfg = load_config()
    from omegaconf.errors import ConfigAttributeError

    with pytest.raises(ConfigAttributeError, match="not_a_key"):
        cfg.train.not_a_key  # noqa: B018


def test_wheel_ships_configs_and_works_outside_the_repo(tmp_path):
    """`pip install .` (non-editable) must find configs as package data, not through repo paths."""
    pytest.importorskip("hatchling")
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path / "dist"), str(repo)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("robolearn-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "robolearn/_configs/config.yaml" in names and "robolearn/_configs/task/lift.yaml" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = "import robolearn.utils.paths as p, robolearn.utils.config as c; print(p.config_dir()); print(c.load_config().task.name)"
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.split()
    assert lines[0].startswith(str(site)) and lines[1] == "lift"


# ------------------------------------------------------------------ schema: types, ranges, unknown keys

BAD_VALUES = [
    # the rows of issue 16
    (["train.steps=-5"], r"^train\.steps=-5: must be an integer >= 1$"),
    (["train.batch_size=0"], r"^train\.batch_size=0: must be an integer >= 1$"),
    (["train.lr=abc"], r"^train\.lr=abc: must be a number > 0$"),
    (["train.steps=abc"], r"^train\.steps=abc: must be an integer >= 1$"),
    (["task.obs_keys=[]"], r"^task\.obs_keys=\[\]: must be a non-empty list of distinct non-empty strings$"),
    (["+train.stepz=5"], r"^train\.stepz: unknown key \(the TrainConfig schema has steps, .*\); did you mean train\.steps\?$"),
    # more types and ranges
    (["train.lr=0"], r"^train\.lr=0\.0: must be a number > 0$"),
    (["train.steps=1.5"], r"^train\.steps=1\.5: must be an integer >= 1$"),
    (["train.steps=true"], r"^train\.steps=true: must be an integer >= 1$"),
    (["train.num_threads=0"], r"^train\.num_threads=0: must be null or an integer >= 1$"),
    (["train.ema_max_decay=1.5"], r"^train\.ema_max_decay=1\.5: must be a number in \[0, 1\]$"),
    (["train.device=gpu"], r"^train\.device=gpu: must be a string: auto, cpu, cuda, cuda:<index> or mps$"),
    (["data.val_ratio=1"], r"^data\.val_ratio=1\.0: must be a number in \[0, 1\)$"),
    (["data.max_episodes=0"], r"^data\.max_episodes=0: must be null or an integer >= 1$"),
    (["collect.episodes=0"], r"^collect\.episodes=0: must be an integer >= 1$"),
    (["eval.n_envs=0"], r"^eval\.n_envs=0: must be an integer >= 1$"),
    (["eval.videos=-1"], r"^eval\.videos=-1: must be an integer >= 0$"),
    (["seed=-1"], r"^seed=-1: must be an integer >= 0$"),
    (["task.control_freq=0"], r"^task\.control_freq=0\.0: must be a number > 0$"),
    (["task.max_episode_steps=0"], r"^task\.max_episode_steps=0: must be an integer >= 1$"),
    (["task.obs_keys=[a,a]"], r"^task\.obs_keys=\[a, a\]: must be a non-empty list of distinct"),
    (["task.image_size=[84]"], r"^task\.image_size=\[84\]: must be a list of 2 integers >= 1$"),
    (["task.image_codec=gif"], r"^task\.image_codec=gif: must be one of webp, png, jpeg, jpeg2k$"),
    (["task=insertion", "task.hold_steps=0"], r"^task\.hold_steps=0: must be an integer >= 1$"),
    (["+task.hold_steps=5"], r"^task\.hold_steps: unknown key \(the RobosuiteTaskConfig schema has "),
    (["policy.vision.width=16"], r"^policy\.vision: unknown key \(the DiffusionPolicyConfig schema has "),
    (["policy.down_dims=[a,b]"], r"^policy\.down_dims\[0\]=a: must be a non-empty list of integers >= 1$"),
    (["policy.name=act"], r"^policy\.name=act: must be diffusion \(the policy of this group file; "),
    (["policy.beta_schedule=cosine"], r"^policy\.beta_schedule=cosine: must be one of linear, scaled_linear, "),
    # the horizon rules
    (["policy.n_action_steps=16"], r"^policy\.n_action_steps=16: must be an integer in \[1, 15\] \(horizon 16 - "
                                   r"n_obs_steps 2 \+ 1"),
    (["policy.n_obs_steps=17"], r"^policy\.n_obs_steps=17: must be an integer in \[1, 16\] \(at most horizon 16\)$"),
    (["policy.horizon=10"], r"^policy\.horizon=10: must be a multiple of 4 \(the U-Net halves the time axis"),
    (["policy.n_groups=3"], r"^policy\.down_dims=\[64, 128, 256\]: must be multiples of n_groups 3"),
    (["policy.kernel_size=4"], r"^policy\.kernel_size=4: must be an odd integer >= 1"),
    (["policy.step_embed_dim=7"], r"^policy\.step_embed_dim=7: must be an even integer"),
    (["policy.num_inference_steps=101"], r"^policy\.num_inference_steps=101: must be an integer in \[1, 100\]"),
    (["policy=act", "policy.n_obs_steps=2"], r"^policy\.n_obs_steps=2: must be 1 \(ACT conditions on the current "),
    (["policy=act", "policy.n_action_steps=21"], r"^policy\.n_action_steps=21: must be an integer in \[1, 20\]"),
    (["policy=act", "policy.dim_model=100"], r"^policy\.dim_model=100: must be a multiple of n_heads 8$"),
    (["policy=act", "policy.dropout=1"], r"^policy\.dropout=1\.0: must be a number in \[0, 1\)$"),
    (["policy=diffusion_image", "policy.vision.width=25"], r"^policy\.vision\.width=25: must be a width whose stage "
                                                            r"widths \[25, 50, 100, 200\] are each divisible"),
    (["task=lift_image", "policy=diffusion_image", "policy.vision.crop=[90,90]"],
     r"^policy\.vision\.crop=\[90, 90\]: must be null or a crop no larger than task\.image_size \[84, 84\]$"),
    # every problem, on one line
    (["train.steps=0", "train.lr=0"], r"^train\.steps=0: must be an integer >= 1; train\.lr=0\.0: must be a number > 0$"),
]


@pytest.mark.parametrize("overrides,pattern", BAD_VALUES, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_bad_values_name_the_key_the_value_and_the_range(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(overrides)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("override", ["data.val_ratio=0", "train.device=cuda:1", "train.num_threads=1", "eval.videos=0",
                                      "policy.n_action_steps=15", "task.cameras=[agentview]", "train.lr=1e-4",
                                      "data.max_episodes=1", "train.warmup_steps=0"])
def test_values_at_the_edge_of_their_range_are_accepted(override):
    key, value = override.split("=")
    assert OmegaConf.select(load_config([override]), key) == OmegaConf.create(f"v: {value}").v


@pytest.mark.parametrize("task,policy,train", list(itertools.product(GROUPS["task"], GROUPS["policy"], GROUPS["train"])))
def test_every_shipped_combination_validates(task, policy, train):
    cfg = load_config([f"task={task}", f"policy={policy}", f"train={train}"])
    assert schema.check_config(cfg) == []
    for section in ("task", "policy", "train"):  # each group file is built on its schema
        assert OmegaConf.get_type(cfg[section]) in schema.SCHEMAS.values(), section
    assert cfg.task.name == task and cfg.policy.name == {"act_small": "act"}.get(policy, policy.split("_")[0])


def test_a_missing_required_value_is_named():
    cfg = load_config(["task=pusht"])
    cfg.task.render_camera = "???"  # what a task file without render_camera composes to
    assert schema.check_config(cfg) == ["task.render_camera: missing value (must be a non-empty string)"]


def _schema_defaults(cls) -> dict:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


@pytest.mark.parametrize("name", ["diffusion", "act"])
def test_policy_class_defaults_are_the_schema_defaults(name):
    from robolearn.policies import policy_class
    from robolearn.policies.vision import VISION_DEFAULTS

    cls = {"diffusion": schema.DiffusionPolicyConfig, "act": schema.ACTPolicyConfig}[name]
    params = {k: p.default for k, p in inspect.signature(policy_class(name)).parameters.items()
              if k not in ("obs_shapes", "action_dim", "stats", "vision")}
    defaults = {k: v for k, v in _schema_defaults(cls).items() if k != "name"}
    assert {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()} == defaults
    assert dataclasses.asdict(schema.VisionConfig()) == VISION_DEFAULTS


def _documented_defaults():
    """``(file, schema, key, value)`` of every ``#   key: value`` line: the defaults a YAML file keeps,
    written out for its readers."""
    files = [config_dir() / "config.yaml", *(config_dir() / g / f"{n}.yaml" for g, names in GROUPS.items() for n in names),
             *sorted((config_dir() / "rl").glob("*.yaml"))]
    for path in files:
        text = path.read_text()
        first = str(yaml.safe_load(text)["defaults"][0]).lstrip("/").split("@")[0]
        group, _, name = first.rpartition("/")
        cls = schema.SCHEMAS.get((group or None, name))
        for m in re.finditer(r"^#   ([a-z_][\w.]*): (.*?)(?:\s{2,}#.*)?$", text, flags=re.M):
            yield path.relative_to(config_dir()), cls, m.group(1), m.group(2)


def test_defaults_written_in_the_yaml_comments_are_the_schema_defaults():
    lines = list(_documented_defaults())
    assert len(lines) > 40
    for path, cls, key, value in lines:
        assert cls is not None, f"{path}: lists defaults but does not start from a schema"
        expected = OmegaConf.to_container(OmegaConf.structured(cls), resolve=False)
        for part in key.split("."):
            expected = expected[part]
        assert yaml.safe_load(value) == expected, f"{path}: {key}"


def test_image_codec_choices_are_the_store_codecs():
    from robolearn.data.store import IMAGE_CODECS

    bounds = next(f for f in dataclasses.fields(schema.TaskConfig) if f.name == "image_codec").metadata["bounds"]
    assert set(bounds.choices) == set(IMAGE_CODECS)


def test_old_checkpoint_config_keeps_loading():
    """Checkpoint configs are read as saved (no schema), the old-format fixture included."""
    from pathlib import Path

    old = config_from_yaml(Path(__file__).parent / "regression" / "checkpoint_v1" / "config.yaml")
    assert old.task.control_freq == 10 and old.policy.horizon == 8 and old.eval.seed_start == 100000


@pytest.mark.parametrize("override,key", [("train.steps=-5", "train.steps=-5"), ("train.batch_size=0", "train.batch_size=0"),
                                          ("train.lr=abc", "train.lr=abc"), ("train.steps=abc", "train.steps=abc"),
                                          ("task.obs_keys=[]", "task.obs_keys=[]"), ("+train.stepz=5", "train.stepz")])
def test_cli_refuses_bad_values_before_any_work(tmp_path, monkeypatch, capsys, override, key):
    """One line, exit 1, and nothing written: the store path does not exist, so a check that came
    after training started would name the store instead."""
    from robolearn.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(["train", override, f"data.path={tmp_path / 'none.zarr'}", f"run_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith(f"robolearn: error: {key}"), err
    assert "internal error" not in err[0] and ("must be" in err[0] or "unknown key" in err[0])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("task", ["insertion", "so101_pick_image", "gym_pusht", "can"])
def test_a_saved_runs_task_takes_checked_overrides(task, tmp_path):
    """override_saved_task (collect --policy): the saved task, typed by the schema whose keys it has,
    takes a good override and refuses what load_config refuses, naming the key; the saved config is
    left as it was."""
    from robolearn.utils.config import override_saved_task, save_config

    save_config(load_config([f"task={task}"]), tmp_path / "config.yaml")
    saved = config_from_yaml(tmp_path / "config.yaml")
    before = saved.task.max_episode_steps
    assert override_saved_task(saved, ["task.max_episode_steps=30"]).task.max_episode_steps == 30
    assert saved.task.max_episode_steps == before
    for override, pattern in [("task.max_episode_steps=abc", r"task.max_episode_steps=abc: must be an integer >= 1"),
                              ("task.max_episode_steps=0", r"task.max_episode_steps=0: must be an integer >= 1"),
                              ("task.image_codec=gif", r"task.image_codec=gif: must be one of webp"),
                              ("task.max_episode_step=30", r"task.max_episode_step: unknown key .*did you mean "
                                                          r"task.max_episode_steps\?"),
                              ("train.steps=3", r"only task\.\* overrides")]:
        with pytest.raises(ConfigError, match=pattern):
            override_saved_task(saved, [override])


def test_a_task_saved_by_another_version_is_merged_as_saved(tmp_path):
    """A saved task whose keys no schema has as a set (an older version's) still takes overrides of
    the keys it has; unknown keys are still refused."""
    from robolearn.utils.config import override_saved_task, save_config

    cfg = load_config(["task=lift"])
    save_config(cfg, tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text().replace("  image_codec: webp\n", "  old_key: 1\n")
    (tmp_path / "config.yaml").write_text(text)
    saved = config_from_yaml(tmp_path / "config.yaml")
    assert override_saved_task(saved, ["task.old_key=2"]).task.old_key == 2
    with pytest.raises(ConfigError, match="bad override"):
        override_saved_task(saved, ["task.nope=1"])
