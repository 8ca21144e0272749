"""`robolearn convert` in the core environment: robomimic HDF5 -> Zarr, per-episode text metadata in
the store, bad sources (one error line, no destination), and the LeRobot directions' hand-off to the
lerobot environment (tests/with_lerobot/ covers the conversions themselves, run in .venv-lerobot)."""

import json
import os
import stat
from pathlib import Path

import h5py
import numpy as np
import pytest

from robolearn.apps.convert import lerobot_importable
from robolearn.cli import main
from robolearn.data.store import EpisodeStore
from robolearn.utils.errors import StoreError

DEMOS = {"demo_0": 5, "demo_1": 7, "demo_2": 4, "demo_10": 6}  # demo_10 sorts after demo_2
MASKS = {"train": ["demo_0", "demo_2", "demo_10"], "valid": ["demo_1"]}
ENV_ARGS = {"env_name": "Lift", "type": 1, "env_kwargs": {"control_freq": 20, "robots": ["Panda"]}}


def demo_arrays(name: str, T: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(int(name.split("_")[1]))
    return {
        "actions": rng.uniform(-1, 1, (T, 7)),
        "rewards": (np.arange(T) == T - 1).astype(np.float64),
        "dones": (np.arange(T) == T - 1).astype(np.int64),
        "states": rng.normal(size=(T, 9)),
        "obs/robot0_eef_pos": rng.normal(size=(T, 3)),
        "obs/object": rng.normal(size=(T, 10)),
        "obs/agentview_image": rng.integers(0, 256, (T, 12, 16, 3), dtype=np.uint8),
    }


def write_robomimic(path: Path) -> Path:
    """A robomimic-layout HDF5 (robomimic's dataset_states_to_obs output), written with h5py."""
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["total"] = sum(DEMOS.values())
        data.attrs["env_args"] = json.dumps(ENV_ARGS)
        for name, T in DEMOS.items():
            g = data.create_group(name)
            g.attrs["num_samples"] = T
            for k, v in demo_arrays(name, T).items():
                g.create_dataset(k, data=v)
                if k.startswith("obs/"):
                    g.create_dataset("next_" + k, data=v)
        for split, names in MASKS.items():
            f.create_dataset(f"mask/{split}", data=np.array([n.encode() for n in names], dtype="S"))
    return path


def test_robomimic_converts_with_exact_counts_keys_values_and_masks(tmp_path, capsys):
    src = write_robomimic(tmp_path / "lift.hdf5")
    dst = tmp_path / "lift.zarr"
    assert main(["convert", str(src), str(dst), "--no-progress"]) == 0
    assert "4 episodes, 22 steps" in capsys.readouterr().out
    store = EpisodeStore.open(dst)
    order = ["demo_0", "demo_1", "demo_2", "demo_10"]
    assert store.n_episodes == 4 and store.n_steps == 22
    assert store.episode_lengths.tolist() == [DEMOS[n] for n in order]
    assert store.keys == sorted(["action", "reward", "done", "states", "robot0_eef_pos", "object", "agentview_image"])
    assert store.key_info("agentview_image").is_image and store.key_info("agentview_image").codec == "webp"
    assert store.fps == 20.0 and store.attrs["env_args"] == ENV_ARGS and store.attrs["source"] == "robomimic"
    for e, name in enumerate(order):
        ep, ref = store.get_episode(e), demo_arrays(name, DEMOS[name])
        np.testing.assert_array_equal(ep["action"], ref["actions"].astype(np.float32))
        np.testing.assert_array_equal(ep["robot0_eef_pos"], ref["obs/robot0_eef_pos"].astype(np.float32))
        np.testing.assert_array_equal(ep["object"], ref["obs/object"].astype(np.float32))
        np.testing.assert_array_equal(ep["states"], ref["states"])  # float64 kept
        np.testing.assert_array_equal(ep["agentview_image"], ref["obs/agentview_image"])  # lossless
        np.testing.assert_array_equal(ep["reward"][:, 0], ref["rewards"])
        np.testing.assert_array_equal(ep["done"][:, 0], ref["dones"])
    assert store.episode_meta("demo").tolist() == order
    assert store.episode_meta("mask_train").tolist() == [True, False, True, True]
    assert store.episode_meta("mask_valid").tolist() == [False, True, False, False]
    assert main(["inspect", str(dst)]) == 0
    out = capsys.readouterr().out
    assert "mask_train" in out and "demo (text, 4 distinct): 'demo_0' x1" in out


@pytest.mark.parametrize("damage", ["truncated", "not_hdf5", "num_samples"])
def test_bad_robomimic_source_is_one_error_line_and_no_destination(tmp_path, capsys, damage):
    src = write_robomimic(tmp_path / "lift.hdf5")
    if damage == "truncated":
        raw = src.read_bytes()
        src.write_bytes(raw[: len(raw) // 2])
    elif damage == "not_hdf5":
        src.write_bytes(b"definitely not HDF5" * 100)
    else:
        with h5py.File(src, "a") as f:
            f["data/demo_2"].attrs["num_samples"] = 99
    dst = tmp_path / "out.zarr"
    assert main(["convert", str(src), str(dst), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("robolearn: error: ") and str(src) in err[0], err
    assert "internal error" not in err[0]
    if damage == "num_samples":
        assert "data/demo_2" in err[0] and "num_samples is 99" in err[0]
    assert not dst.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lift.hdf5"]  # no staging left behind


def test_existing_destination_is_refused_and_kept(tmp_path, capsys):
    src = write_robomimic(tmp_path / "lift.hdf5")
    dst = tmp_path / "lift.zarr"
    dst.mkdir()
    (dst / "keep").write_text("x")
    assert main(["convert", str(src), str(dst), "--no-progress"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert (dst / "keep").read_text() == "x"
    assert main(["convert", str(src), str(dst), "--no-progress", "--overwrite"]) == 0
    assert EpisodeStore.open(dst).n_episodes == 4


def test_unknown_source_and_unsupported_direction(tmp_path, capsys):
    (tmp_path / "thing").mkdir()
    assert main(["convert", str(tmp_path / "thing"), str(tmp_path / "o.zarr")]) == 1
    assert "not a dataset robolearn can read" in capsys.readouterr().err
    src = write_robomimic(tmp_path / "lift.hdf5")
    assert main(["convert", str(src), str(tmp_path / "o"), "--to", "lerobot"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "robomimic" in err[0] and "not supported" in err[0]


def test_text_metadata_round_trips_and_old_readers_see_integers(tmp_path):
    store = EpisodeStore.create(tmp_path / "s.zarr", fps=10)
    for e, task in enumerate([None, "pick the cube", "place it", "pick the cube"]):
        store.add_episode({"x": np.full((3, 2), e, np.float32)}, {"seed": e, **({"task": task} if task else {})})
    store = EpisodeStore.open(tmp_path / "s.zarr", mode="a")
    store.add_episode({"x": np.zeros((2, 2), np.float32)}, {"seed": 9, "task": "place it"})
    assert store.episode_meta("task").tolist() == ["", "pick the cube", "place it", "pick the cube", "place it"]
    assert store.text_meta_keys == ["task"] and store.meta_keys == ["seed", "task"]
    assert store.summary()["text_meta"]["task"] == {"pick the cube": 2, "place it": 2, "": 1}
    import zarr

    raw = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")["meta/task"]
    assert raw.dtype == np.int32 and raw[:].tolist() == [-1, 0, 1, 0, 1]  # codes into attrs["values"]
    with pytest.raises(StoreError, match="meta 'task' is text"):
        store.add_episode({"x": np.zeros((2, 2), np.float32)}, {"task": 3})
    store.discard_episode()
    with pytest.raises(StoreError, match="meta 'seed' is numeric"):
        store.add_episode({"x": np.zeros((2, 2), np.float32)}, {"seed": "nine"})


def lerobot_dir(path: Path) -> Path:
    (path / "meta").mkdir(parents=True)
    (path / "meta" / "info.json").write_text(json.dumps({"codebase_version": "v3.0", "fps": 10}))
    return path


needs_no_lerobot = pytest.mark.skipif(lerobot_importable(), reason="lerobot is importable here")


@needs_no_lerobot
def test_lerobot_direction_without_lerobot_env_says_make_lerobot_env(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ROBOLEARN_LEROBOT_VENV", str(tmp_path / "no-such-venv"))
    src = lerobot_dir(tmp_path / "ds")
    dst = tmp_path / "out.zarr"
    assert main(["convert", str(src), str(dst)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "make lerobot-env" in err[0], err
    assert not dst.exists()


@needs_no_lerobot
def test_lerobot_direction_runs_in_the_lerobot_env(tmp_path, monkeypatch):
    """With a lerobot environment present, the command re-runs there with the formats resolved."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    record = tmp_path / "argv.txt"
    python = venv / "bin" / "python"
    python.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {record}\nexit 3\n")
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("ROBOLEARN_LEROBOT_VENV", str(venv))
    store = EpisodeStore.create(tmp_path / "s.zarr", fps=10)
    store.add_episode({"x": np.zeros((2, 2), np.float32)})
    assert main(["convert", str(tmp_path / "s.zarr"), str(tmp_path / "exported"), "--rename", "x=observation.state",
                 "--no-progress"]) == 3
    assert record.read_text().split("\n")[:-1] == [
        "-m", "robolearn.cli", "convert", str(tmp_path / "s.zarr"), str(tmp_path / "exported"), "--from", "zarr",
        "--to", "lerobot", "--vcodec", "libsvtav1", "--rename", "x=observation.state", "--no-progress"]
    assert not (tmp_path / "exported").exists()
