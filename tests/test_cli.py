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


# deploy of image policies (and the cameras a robot config lacks): tests/test_hal_cameras.py


# ------------------------------------------------------------------ inspect: corrupt chunks and NaN/Inf


def _tree_sha256(path):
    import hashlib

    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def _corrupt(store, key, chunk, how):
    """Truncate chunk file ``data/<key>/<chunk>`` to half, or replace it by as many seeded random bytes."""
    import numpy as np

    f = store / "data" / key / chunk
    raw = f.read_bytes()
    f.write_bytes(raw[: len(raw) // 2] if how == "truncated" else
                  np.random.default_rng(0).integers(0, 256, len(raw), dtype=np.uint8).tobytes())


@pytest.fixture
def chunked_store(tmp_path):
    """3 episodes of 5, 9, 3 steps; obs and action in chunks of 4 steps (format 2: files <chunk>.0)."""
    import numpy as np

    from robolearn.data.store import KeyInfo

    path = tmp_path / "chunked.zarr"
    s = EpisodeStore.create(path, fps=10)
    s.define_key("obs", KeyInfo((4,), "float32"), chunk_steps=4)
    s.define_key("action", KeyInfo((2,), "float32"), chunk_steps=4)
    rng = np.random.default_rng(0)
    for e, T in enumerate([5, 9, 3]):
        s.add_episode({"obs": rng.normal(size=(T, 4)).astype(np.float32),
                       "action": rng.normal(size=(T, 2)).astype(np.float32)}, meta={"seed": e})
    return path


def test_inspect_check_lists_every_bad_chunk_and_exits_1(chunked_store):
    ok = run_cli("inspect", str(chunked_store), "--check")
    assert ok.returncode == 0 and "all 12 chunks decode" in ok.stdout, ok.stdout + ok.stderr
    _corrupt(chunked_store, "obs", "1.0", "truncated")
    _corrupt(chunked_store, "action", "3.0", "random")
    _corrupt(chunked_store, "obs", "4.0", "random")
    before = _tree_sha256(chunked_store)
    out = run_cli("inspect", str(chunked_store), "--check")
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("data/action: chunk data/action/3.0 (steps 12-15, episodes 1-2): Blosc header says")
    assert lines[1].startswith("data/obs: chunk data/obs/1.0 (steps 4-7, episodes 0-1): Blosc header says")
    assert lines[2].startswith("data/obs: chunk data/obs/4.0 (step 16, episode 2): Blosc header says")
    assert_one_line_error(out, "chunked.zarr", "3 of 12 chunks do not decode")

    js = run_cli("inspect", str(chunked_store), "--check", "--json")
    assert js.returncode == 1
    report = json.loads(js.stdout)
    assert report["n_chunks"] == 12
    assert [(b["chunk"], b["start"], b["stop"], b["episodes"]) for b in report["bad_chunks"]] == [
        ("data/action/3.0", 12, 16, [1, 2]), ("data/obs/1.0", 4, 8, [0, 1]), ("data/obs/4.0", 16, 17, [2, 2])]
    assert _tree_sha256(chunked_store) == before


def test_inspect_and_train_on_a_corrupt_chunk_end_with_one_line_naming_it(chunked_store, tmp_path):
    _corrupt(chunked_store, "action", "2.0", "truncated")
    before = _tree_sha256(chunked_store)
    fragments = ("chunked.zarr", "key 'data/action'", "chunk data/action/2.0 (steps 8-11, episode 1)")
    assert_one_line_error(run_cli("inspect", str(chunked_store)), *fragments)
    out = run_cli("train", f"data.path={chunked_store}", f"run_dir={tmp_path / 'run'}", "task.obs_keys=[obs]",
                  "train.steps=2")
    assert_one_line_error(out, *fragments)
    assert "internal error" not in out.stderr
    assert _tree_sha256(chunked_store) == before


def test_inspect_flags_nonfinite_keys_and_episodes(store):
    import numpy as np
    import zarr

    obs = zarr.open_group(str(store), mode="r+")["data/obs"]  # episodes of 4, 5, 6 steps: ends 4, 9, 15
    obs[5, 2] = np.nan
    obs[12, 0] = np.inf
    out = run_cli("inspect", str(store))
    assert out.returncode == 0, out.stderr
    obs_line = next(line for line in out.stdout.splitlines() if line.strip().startswith("obs "))
    assert "NON-FINITE: 1 NaN, 1 Inf in episodes [1, 2]" in obs_line
    assert "NON-FINITE" not in next(line for line in out.stdout.splitlines() if line.strip().startswith("action "))
    assert "warning: NaN/Inf in obs" in out.stdout
    info = json.loads(run_cli("inspect", str(store), "--json").stdout)
    assert info["keys"]["obs"]["nonfinite"] == {"count": 2, "nan": 1, "inf": 1, "episodes": [1, 2]}
    assert info["keys"]["action"]["nonfinite"]["count"] == 0


def test_overrides_after_an_option_are_overrides(monkeypatch, capsys):
    import robolearn.cli as cli

    seen = {}
    monkeypatch.setattr(cli, "cmd_distill", lambda args: seen.update(vars(args)) or 0)
    assert cli.main(["distill", "teacher", "--out", "runs/x", "distill.steps=5", "distill.method=direct"]) == 0
    assert seen["checkpoint"] == "teacher" and seen["out"] == "runs/x"
    assert seen["overrides"] == ["distill.steps=5", "distill.method=direct"]
    with pytest.raises(SystemExit):  # an unknown option is still refused, not taken as an override
        cli.main(["distill", "teacher", "--out", "runs/x", "distill.steps=5", "--nope"])
    assert "unrecognized arguments: distill.steps=5 --nope" in capsys.readouterr().err
