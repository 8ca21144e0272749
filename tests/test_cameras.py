"""Camera observations, rendering backends and image keys in the store."""

import os

import numpy as np
import pytest

from robolearn.data.store import EpisodeStore, KeyInfo
from robolearn.utils.errors import StoreError
from robolearn.utils.gl import configure_gl, pick_backend

# CI installs OSMesa (scripts/setup.sh) and sets ROBOLEARN_REQUIRE_RENDER=1: rendering tests must run there.
needs_render = pytest.mark.skipif(
    pick_backend() is None and not os.environ.get("ROBOLEARN_REQUIRE_RENDER"),
    reason="no offscreen OpenGL backend (apt-get install libosmesa6)",
)


def test_explicit_mujoco_gl_is_never_overridden(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "egl")
    assert configure_gl() == "egl" and os.environ["MUJOCO_GL"] == "egl"


@needs_render
def test_insertion_cameras_are_uint8_deterministic_and_change_with_the_scene():
    from robolearn.envs.insertion import InsertionEnv, InsertionExpert

    env = InsertionEnv(cameras=("top", "front"), image_size=(64, 80))
    obs, _ = env.reset(seed=4)
    assert obs["top_image"].shape == (64, 80, 3) and obs["top_image"].dtype == np.uint8
    assert env.observation_space.contains(obs)
    assert obs["front_image"].std() > 5  # a scene, not a blank frame
    first = obs["top_image"].copy()
    expert = InsertionExpert()
    for _ in range(20):
        obs, *_ = env.step(expert(obs))
    assert np.abs(obs["top_image"].astype(int) - first).max() > 50  # the gripper moved in view
    again, _ = env.reset(seed=4)
    np.testing.assert_array_equal(again["top_image"], first)
    other, _ = env.reset(seed=5)
    assert not np.array_equal(other["top_image"], first)
    env.close()


@needs_render
def test_unknown_camera_names_the_known_ones():
    from robolearn.envs.insertion import InsertionEnv

    with pytest.raises(ValueError, match=r"unknown camera.*'wrist'.*'top'"):
        InsertionEnv(cameras=("wrist",))


@needs_render
def test_lift_camera_and_video_frames():
    from robolearn.envs.robosuite_env import RobosuiteEnv

    env = RobosuiteEnv("lift", cameras=("agentview",), image_size=(48, 48), render_mode="rgb_array",
                       render_size=(60, 80))
    obs, _ = env.reset(seed=1)
    assert obs["agentview_image"].shape == (48, 48, 3) and obs["agentview_image"].std() > 5
    frame = env.render()
    assert frame.shape == (60, 80, 3) and frame.dtype == np.uint8
    assert RobosuiteEnv("lift").render() is None  # no render mode, no frame
    env.close()


@needs_render
def test_collect_with_cameras_stores_lossless_frames(tmp_path):
    from robolearn.envs import make_env
    from robolearn.apps.collect import collect_demos
    from robolearn.utils.config import load_config

    cfg = load_config(["task=insertion", "task.cameras=[top]", "task.image_size=[32,32]"])
    collect_demos(cfg.task, tmp_path / "d.zarr", 2, progress=False)
    store = EpisodeStore.open(tmp_path / "d.zarr")
    info = store.key_info("top_image")
    assert info.shape == (32, 32, 3) and info.codec == "webp"
    assert store.attrs["cameras"] == {"top": {"height": 32, "width": 32}}
    first = store.get_episode(0)["top_image"][0]
    obs, _ = make_env(cfg.task).reset(seed=0)
    np.testing.assert_array_equal(first, obs["top_image"])  # lossless round trip


def _image_store(path, codec=None, zarr_format=2):
    store = EpisodeStore.create(path, fps=10, zarr_format=zarr_format)
    store.define_key("cam_image", KeyInfo((24, 32, 3), "uint8", codec=codec))
    store.define_key("action", KeyInfo((2,), "float32"))
    rng = np.random.default_rng(0)
    frames = [np.clip(rng.normal(120, 30, (24, 32, 3)), 0, 255).astype(np.uint8) for _ in range(6)]
    for f in frames:
        store.add_step({"cam_image": f, "action": np.zeros(2, np.float32)})
    store.commit_episode()
    return np.stack(frames)


@pytest.mark.parametrize("codec,lossless", [("webp", True), ("png", True), ("jpeg", False), ("jpeg2k", False)])
def test_image_codecs_round_trip(tmp_path, codec, lossless):
    frames = _image_store(tmp_path / "s.zarr", codec)
    store = EpisodeStore.open(tmp_path / "s.zarr")
    back = store.load()["cam_image"]
    assert store.key_info("cam_image").codec == codec
    assert store._array("cam_image").chunks[0] == 1  # one frame per chunk
    err = np.abs(back.astype(int) - frames).mean()
    assert err == 0 if lossless else 0 < err < 20


def test_unknown_image_codec_is_refused(tmp_path):
    with pytest.raises(StoreError, match="unknown image codec 'gif'"):
        _image_store(tmp_path / "s.zarr", "gif")


def test_format3_store_keeps_images_lossless(tmp_path):
    frames = _image_store(tmp_path / "s.zarr", zarr_format=3)
    store = EpisodeStore.open(tmp_path / "s.zarr")
    np.testing.assert_array_equal(store.load()["cam_image"], frames)
    assert store.key_info("cam_image").codec == "blosc-zstd"


@needs_render
@pytest.mark.parametrize("task,camera", [("lift", "agentview"), ("can", "robot0_eye_in_hand"), ("square", "frontview"),
                                         ("pusht", "top"), ("insertion", "front")])
def test_collect_works_for_every_task_with_a_camera(tmp_path, task, camera):
    from robolearn.apps.collect import collect_demos
    from robolearn.utils.config import load_config

    cfg = load_config([f"task={task}", f"task.cameras=[{camera}]", "task.image_size=[24,32]"])
    result = collect_demos(cfg.task, tmp_path / "d.zarr", 1, progress=False)
    assert result["kept"] == 1
    store = EpisodeStore.open(tmp_path / "d.zarr")
    frames = store.get_episode(0)[f"{camera}_image"]
    assert frames.shape == (store.n_steps, 24, 32, 3) and frames.std() > 3
    assert set(cfg.task.obs_keys) <= set(store.keys)
