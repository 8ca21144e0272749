import json
import subprocess
import sys

import pytest

from robolearn.data.store import EpisodeStore


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "robolearn.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.fixture
def store(tmp_path, episode_factory):
    path = tmp_path / "demo.zarr"
    s = EpisodeStore.create(path, fps=20, attrs={"task": "toy"})
    for e in range(3):
        s.add_episode(episode_factory(4 + e, offset=e), meta={"seed": e})
    return path


def test_inspect_json_and_text(store):
    out = run_cli("inspect", str(store), "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["n_episodes"] == 3 and info["n_steps"] == 15 and info["fps"] == 20
    assert info["keys"]["obs"]["shape"] == [3] and info["keys"]["obs"]["max"] == [7, 7, 7]
    text = run_cli("inspect", str(store))
    assert "episodes: 3" in text.stdout and "obs" in text.stdout


def assert_one_line_error(out, *fragments):
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr and lines[0].startswith("robolearn: error:")
    for f in fragments:
        assert f in lines[0], lines[0]


def test_garbage_path(tmp_path):
    assert_one_line_error(run_cli("inspect", str(tmp_path / "nowhere.zarr")), "nowhere.zarr", "no such file")


def test_corrupt_store(store):
    import zarr

    zarr.open_group(str(store), mode="r+")["data/action"].resize((5, 2))
    assert_one_line_error(run_cli("inspect", str(store)), "demo.zarr", "data/action")


def test_unknown_config_key(tmp_path):
    assert_one_line_error(run_cli("train", "train.nope=1"), "train.nope")


def test_missing_checkpoint(tmp_path):
    assert_one_line_error(run_cli("eval", str(tmp_path / "ckpt")), "ckpt", "no such checkpoint")


def test_debug_shows_traceback(tmp_path):
    out = run_cli("--debug", "inspect", str(tmp_path / "nowhere.zarr"))
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_collect_refuses_to_clobber_without_flag(store):
    assert_one_line_error(run_cli("collect", "--episodes", "1", "--out", str(store)), "--append", "--overwrite")


def test_record_without_a_terminal_is_a_clear_error(tmp_path):
    run = subprocess.run([sys.executable, "-m", "robolearn.cli", "record", "--out", str(tmp_path / "t.zarr")],
                         capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert_one_line_error(run, "interactive terminal")
    assert not (tmp_path / "t.zarr").exists()


def test_deploy_missing_checkpoint(tmp_path):
    assert_one_line_error(run_cli("deploy", str(tmp_path / "ckpt"), "--robot", "sim"), "no such checkpoint")


def test_unknown_robot_names_the_known_ones():
    from robolearn.robots.config import load_robot_config
    from robolearn.utils.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown robot 'nope'.*'sim'"):
        load_robot_config("nope")


def test_deploy_refuses_an_image_policy_clearly(tmp_path):
    from omegaconf import OmegaConf

    from robolearn.apps.deploy import PolicyStack
    from robolearn.utils.config import load_config
    from robolearn.utils.errors import ConfigError

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    OmegaConf.save(load_config(["task=lift_image", "policy=diffusion_image"]), ckpt / "config.yaml")
    for name in ("policy.json", "model.safetensors"):
        (ckpt / name).write_text("{}")
    with pytest.raises(ConfigError, match=r"camera images \['agentview_image', 'robot0_eye_in_hand_image'\]"):
        PolicyStack(ckpt, "sim")
