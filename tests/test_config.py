import subprocess
import sys
import zipfile

import pytest

from robolearn.utils.config import load_config
from robolearn.utils.errors import ConfigError


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
