"""LeRobot v3 <-> Zarr through lerobot's own dataset API. Runs in the lerobot environment
(`make lerobot-env`; `.venv-lerobot/bin/python -m pytest -q tests/with_lerobot`); skipped where lerobot
cannot be imported (the core .venv). The folder is not named `lerobot`: on sys.path it would shadow
the package."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lerobot.datasets.lerobot_dataset")

from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: E402

from robolearn.apps.train import train_from_overrides  # noqa: E402
from robolearn.cli import main  # noqa: E402
from robolearn.data.store import EpisodeStore  # noqa: E402

H, W = 48, 64
#: Largest and mean |error| (of 255) allowed on camera frames after the AV1 round trip (lerobot's
#: encoder: libsvtav1, yuv420p, crf 30, g 2). Measured on these 48x64 frames: max 28, mean 3.21
#: (yuv420p halves the chroma resolution, so colour edges carry most of the error).
IMAGE_MAX_ERR, IMAGE_MEAN_ERR = 40, 4.0

TINY_IMAGE_TRAIN = [
    "task=lift_image", "task.obs_keys=[agent_pos,top_image]", "task.cameras=[top]", f"task.image_size=[{H},{W}]",
    "policy=diffusion_image", "policy.vision.width=8", "policy.vision.crop=[40,56]", "policy.vision.feature_dim=16",
    "policy.vision.num_keypoints=8", "policy.down_dims=[16,32]", "policy.horizon=8", "policy.n_action_steps=4",
    "policy.kernel_size=3", "policy.n_groups=4", "policy.step_embed_dim=16", "policy.num_train_timesteps=20",
    "policy.num_inference_steps=3", "train.batch_size=8", "train.warmup_steps=2", "train.log_every=2",
    "train.val_every=4", "train.num_threads=1", "data.val_ratio=0.3", "train.steps=4", "train.ckpt_every=4"]


def frame_image(e: int, t: int) -> np.ndarray:
    """A smooth moving pattern (what a camera sees), not noise, which no video codec keeps."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    img = np.stack([128 + 100 * np.sin((x + 3 * t) / 9.0 + e), 128 + 100 * np.cos((y - 2 * t) / 7.0),
                    np.full_like(x, 40.0 * e + 20)], axis=-1)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_lerobot_dataset(root: Path, episodes=(8, 9, 10)) -> Path:
    """A LeRobot v3 dataset made with lerobot's own API: one camera, state, action, two tasks."""
    features = {"observation.state": {"dtype": "float32", "shape": (4,), "names": ["x", "y", "gx", "gy"]},
                "action": {"dtype": "float32", "shape": (2,), "names": ["dx", "dy"]},
                "observation.images.top": {"dtype": "video", "shape": (H, W, 3),
                                           "names": ["height", "width", "channels"]}}
    ds = LeRobotDataset.create("test/tiny", fps=10, features=features, root=root, use_videos=True)
    rng = np.random.default_rng(0)
    for e, T in enumerate(episodes):
        for t in range(T):
            ds.add_frame({"observation.state": rng.normal(size=4).astype(np.float32),
                          "action": rng.normal(size=2).astype(np.float32),
                          "observation.images.top": frame_image(e, t), "task": ["push left", "push right"][e % 2]})
        ds.save_episode()
    ds.finalize()
    return root


def make_store(path: Path) -> Path:
    store = EpisodeStore.create(path, fps=10, attrs={"task": "toy"})
    rng = np.random.default_rng(1)
    for e, T in enumerate([6, 9, 7]):
        store.add_episode({"agent_pos": rng.normal(size=(T, 2)).astype(np.float32),
                           "obs": rng.normal(size=(T, 5)).astype(np.float32),
                           "action": rng.uniform(-1, 1, (T, 2)).astype(np.float32),
                           "top_image": np.stack([frame_image(e, t) for t in range(T)])},
                          {"seed": e, "task": ["reach", "push", "reach"][e]})
    return path


def one_error_line(capsys) -> str:
    err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("robolearn:")]
    assert len(err) == 1 and err[0].startswith("robolearn: error: "), err
    return err[0]


def test_lerobot_made_dataset_converts_and_trains(tmp_path, capsys):
    src = make_lerobot_dataset(tmp_path / "ds")
    dst = tmp_path / "ds.zarr"
    assert main(["convert", str(src), str(dst), "--no-progress"]) == 0
    assert "3 episodes, 27 steps" in capsys.readouterr().out
    store = EpisodeStore.open(dst)
    lr = LeRobotDataset("test/tiny", root=src, video_backend="pyav")
    assert store.n_episodes == lr.num_episodes == 3 and store.n_steps == lr.num_frames == 27
    assert store.keys == ["action", "agent_pos", "top_image"] and store.fps == 10.0
    assert store.key_info("top_image").shape == (H, W, 3) and store.key_info("top_image").is_image
    assert "names: ['x', 'y', 'gx', 'gy']" in store.key_info("agent_pos").description
    assert store.episode_meta("task").tolist() == ["push left", "push right", "push left"]
    data = store.load()
    for i in (0, 8, 26):
        item = lr[i]
        np.testing.assert_array_equal(data["agent_pos"][i], item["observation.state"].numpy())
        np.testing.assert_array_equal(data["action"][i], item["action"].numpy())
        ref = (item["observation.images.top"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        np.testing.assert_array_equal(data["top_image"][i], ref)  # the frames lerobot itself decodes
    ckpt = train_from_overrides([*TINY_IMAGE_TRAIN, f"data.path={dst}", f"run_dir={tmp_path / 'run'}"],
                                progress=False)
    assert (ckpt / "train_state.json").exists()
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["steps"] == 4


def test_zarr_lerobot_zarr_round_trip(tmp_path, capsys):
    src = make_store(tmp_path / "s.zarr")
    exported = tmp_path / "exported"
    assert main(["convert", str(src), str(exported), "--no-progress"]) == 0
    lr = LeRobotDataset("robolearn/exported", root=exported, video_backend="pyav")
    store = EpisodeStore.open(src)
    assert lr.num_frames == store.n_steps == 22 and lr.num_episodes == store.n_episodes == 3
    assert set(lr.meta.features) >= {"observation.state", "observation.obs", "action", "observation.images.top"}
    assert lr.meta.video_keys == ["observation.images.top"] and lr.meta.fps == 10
    assert sorted(lr.meta.tasks.index) == ["push", "reach"]
    assert lr.meta.stats["action"]["max"].shape == (2,)
    item = lr[10]  # lerobot loads and decodes it
    assert item["observation.images.top"].shape == (3, H, W) and item["task"] == "push"
    back = tmp_path / "back.zarr"
    assert main(["convert", str(exported), str(back), "--no-progress"]) == 0
    capsys.readouterr()
    again = EpisodeStore.open(back)
    assert again.keys == store.keys and again.episode_lengths.tolist() == store.episode_lengths.tolist()
    assert again.episode_meta("task").tolist() == ["reach", "push", "reach"]
    a, b = store.load(), again.load()
    for k in ("agent_pos", "obs", "action"):
        np.testing.assert_array_equal(a[k], b[k])  # low-dim: exact
    err = np.abs(a["top_image"].astype(np.int16) - b["top_image"].astype(np.int16))
    print(f"AV1 round trip |error|: max {err.max()}, mean {err.mean():.3f}")
    assert err.max() <= IMAGE_MAX_ERR and err.mean() <= IMAGE_MEAN_ERR


@pytest.mark.parametrize("damage", ["truncated_parquet", "missing_video", "truncated_episodes"])
def test_bad_lerobot_source_is_one_error_line_and_no_destination(tmp_path, capsys, damage):
    src = make_lerobot_dataset(tmp_path / "ds", episodes=(5, 6, 5))
    if damage == "missing_video":
        bad = next((src / "videos").rglob("*.mp4"))
        bad.unlink()
    else:
        bad = next((src / ("data" if damage == "truncated_parquet" else "meta/episodes")).rglob("*.parquet"))
        raw = bad.read_bytes()
        bad.write_bytes(raw[: len(raw) - 40])  # no footer, as an interrupted recording leaves it
    dst = tmp_path / "out.zarr"
    assert main(["convert", str(src), str(dst), "--no-progress"]) == 1
    line = one_error_line(capsys)
    assert str(bad) in line and "internal error" not in line, line
    assert not dst.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no staging left behind


def test_core_command_delegates_here(tmp_path, capsys):
    """`robolearn convert` with lerobot importable runs in-process; the same call from the core
    environment re-runs in this one (tests/test_convert.py covers that hand-off)."""
    src = make_store(tmp_path / "s.zarr")
    assert main(["convert", str(src), str(tmp_path / "out"), "--rename", "obs=observation.environment_state",
                 "--vcodec", "h264", "--no-progress"]) == 0
    lr = LeRobotDataset("robolearn/out", root=tmp_path / "out", video_backend="pyav")
    assert "observation.environment_state" in lr.meta.features and lr.num_frames == 22
    shutil.rmtree(tmp_path / "out")
