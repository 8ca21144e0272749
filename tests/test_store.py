import hashlib
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from robolearn.data.store import EpisodeStore, KeyInfo
from robolearn.utils.errors import StoreError


def tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        h.update(str(p.relative_to(path)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("fmt", [2, 3])
def test_roundtrip_episodes_metadata_and_attrs(tmp_path, episode_factory, fmt):
    path = tmp_path / "demo.zarr"
    store = EpisodeStore.create(path, fps=20.0, robot="Panda", action_space={"type": "eef_delta"},
                                zarr_format=fmt, flush_every=4)
    store.define_key("obs", KeyInfo((3,), "float32", "m", "position"))
    store.define_key("action", KeyInfo((2,), "float32", "m", "delta"))
    eps = [episode_factory(T, offset=100 * i) for i, T in enumerate([5, 9, 3])]
    for i, ep in enumerate(eps):
        assert store.add_episode(ep, meta={"seed": 10 + i, "success": i != 1}) == i

    s = EpisodeStore.open(path)
    assert s.n_episodes == 3 and s.n_steps == 17
    assert s.episode_ends.tolist() == [5, 14, 17]
    assert s.episode_lengths.tolist() == [5, 9, 3]
    for i, ep in enumerate(eps):
        got = s.get_episode(i)
        np.testing.assert_array_equal(got["obs"], ep["obs"])
        np.testing.assert_array_equal(got["action"], ep["action"])
    assert s.episode_meta("seed").tolist() == [10, 11, 12]
    assert s.episode_meta("success").tolist() == [True, False, True]
    assert s.fps == 20.0 and s.attrs["robot"] == "Panda" and s.attrs["schema_version"] == 1
    assert s.key_info("obs") == KeyInfo((3,), "float32", "m", "position")
    assert s.load(["action"])["action"].shape == (17, 2)


def test_step_appends_discard_and_reopen_to_append(tmp_path, episode_factory):
    path = tmp_path / "s.zarr"
    store = EpisodeStore.create(path, flush_every=3)
    ep = episode_factory(7)
    for t in range(7):
        store.add_step({k: v[t] for k, v in ep.items()})
    store.commit_episode()
    for t in range(5):  # flushed partly to disk (flush_every=3), then discarded
        store.add_step({k: v[t] + 50 for k, v in ep.items()})
    assert store.discard_episode() == 5
    assert zarr.open_group(str(path))["data/obs"].shape[0] == 7  # rolled back on disk

    again = EpisodeStore.open(path, mode="a")
    again.add_episode(episode_factory(4, offset=1000))
    s = EpisodeStore.open(path)
    assert s.episode_ends.tolist() == [7, 11]
    np.testing.assert_array_equal(s.get_episode(1)["obs"][:, 0], 1000 + np.arange(4))


def test_read_only_and_shape_errors_name_the_key(tmp_path, episode_factory):
    path = tmp_path / "s.zarr"
    EpisodeStore.create(path).add_episode(episode_factory(3))
    ro = EpisodeStore.open(path)
    with pytest.raises(StoreError, match="read-only"):
        ro.add_step({"obs": np.zeros(3), "action": np.zeros(2)})
    rw = EpisodeStore.open(path, mode="a")
    with pytest.raises(StoreError, match="data/obs.*shape"):
        rw.add_step({"obs": np.zeros(4), "action": np.zeros(2)})
    with pytest.raises(StoreError, match="missing \\['action'\\]"):
        rw.add_step({"obs": np.zeros(3)})
    with pytest.raises(StoreError, match="empty episode"):
        rw.commit_episode()


def _dp_style_store(root, episode_ends, n_rows, img=False):
    """A store written the way Diffusion Policy's ReplayBuffer writes one (zarr format 2, no attrs)."""
    g = zarr.open_group(root, mode="w", zarr_format=2)
    data = g.create_group("data")
    data.create_array("action", data=np.arange(n_rows * 2, dtype=np.float32).reshape(n_rows, 2))
    data.create_array("state", data=np.arange(n_rows * 5, dtype=np.float32).reshape(n_rows, 5))
    if img:
        data.create_array("img", data=np.zeros((n_rows, 8, 8, 3), np.uint8), chunks=(1, 8, 8, 3))
    g.create_group("meta").create_array("episode_ends", data=np.asarray(episode_ends, dtype=np.int64))
    return g


def test_opens_diffusion_policy_directory_and_zip_stores(tmp_path):
    _dp_style_store(str(tmp_path / "pusht.zarr"), [4, 10], 10, img=True)
    s = EpisodeStore.open(tmp_path / "pusht.zarr")
    assert (s.n_episodes, s.n_steps, s.keys) == (2, 10, ["action", "img", "state"])
    np.testing.assert_array_equal(s.get_episode(1)["action"][0], [8, 9])
    assert s.fps is None

    zstore = zarr.storage.ZipStore(tmp_path / "pusht.zarr.zip", mode="w")
    _dp_style_store(zstore, [3, 6], 6)
    zstore.close()
    z = EpisodeStore.open(tmp_path / "pusht.zarr.zip")
    assert z.episode_lengths.tolist() == [3, 3]
    np.testing.assert_array_equal(z.get_episode(0)["state"][2], np.arange(10, 15))
    with pytest.raises(StoreError, match="read-only"):
        EpisodeStore.open(tmp_path / "pusht.zarr.zip", mode="a")


BAD_STORES = {
    "unequal_lengths": (lambda r: _dp_style_store(r, [4, 10], 10).__getitem__("data/action").resize((8, 2)),
                        "data/action.*8 steps.*commits 10"),
    "ends_not_increasing": (lambda r: _dp_style_store(r, [6, 4, 10], 10), "episode_ends.*strictly increasing"),
    "ends_past_data": (lambda r: _dp_style_store(r, [4, 12], 10), "data/(action|state).*10 steps.*commits 12"),
    "missing_meta": (lambda r: zarr.open_group(r, mode="w", zarr_format=2).create_group("data"), "missing key 'meta'"),
    "missing_episode_ends": (lambda r: [g := zarr.open_group(r, mode="w", zarr_format=2), g.create_group("data"),
                                        g.create_group("meta")], "missing key 'meta/episode_ends'"),
    "missing_data": (lambda r: zarr.open_group(r, mode="w", zarr_format=2).create_group("meta")
                     .create_array("episode_ends", data=np.array([3])), "missing key 'data'"),
    "float_episode_ends": (lambda r: [g := _dp_style_store(r, [4, 10], 10), g.__getitem__("meta").create_array(
        "episode_ends", data=np.array([4.0, 10.0]), overwrite=True)], "meta/episode_ends.*integer"),
    "string_dtype": (lambda r: _dp_style_store(r, [10], 10)["data"].create_array(
        "label", shape=(10,), dtype="<U4"), "data/label.*dtype"),
}


@pytest.mark.parametrize("name", sorted(BAD_STORES))
def test_bad_stores_raise_naming_path_and_key_and_stay_untouched(tmp_path, name):
    build, pattern = BAD_STORES[name]
    root = tmp_path / f"{name}.zarr"
    build(str(root))
    before = tree_digest(root)
    for mode in ("r", "a"):
        with pytest.raises(StoreError, match=pattern) as info:
            EpisodeStore.open(root, mode=mode)
        assert str(root) in str(info.value)
    assert tree_digest(root) == before


def test_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="no such file"):
        EpisodeStore.open(tmp_path / "nothing.zarr")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("hello")
    with pytest.raises(StoreError, match="not a zarr store"):
        EpisodeStore.open(tmp_path / "junk")
    (tmp_path / "f.zarr").write_text("garbage")
    with pytest.raises(StoreError, match="f.zarr"):
        EpisodeStore.open(tmp_path / "f.zarr")


def test_partial_rows_and_torn_commit_are_ignored_then_trimmed(tmp_path, episode_factory):
    path = tmp_path / "s.zarr"
    store = EpisodeStore.create(path)
    store.add_episode(episode_factory(5))
    g = zarr.open_group(str(path), mode="r+")
    # Crash states: rows of an unfinished episode, and an episode_ends entry resized but not written.
    g["data/obs"].append(np.full((3, 3), 99, np.float32))
    g["data/action"].append(np.full((2, 2), 99, np.float32))
    g["meta/episode_ends"].resize((2,))
    assert g["meta/episode_ends"][:].tolist() == [5, -1]

    s = EpisodeStore.open(path)
    assert (s.n_episodes, s.n_steps) == (1, 5)
    assert g["data/obs"].shape[0] == 8  # opening did not modify anything

    a = EpisodeStore.open(path, mode="a")
    a.add_episode(episode_factory(2, offset=7))
    s = EpisodeStore.open(path)
    assert s.episode_ends.tolist() == [5, 7]
    np.testing.assert_array_equal(s.get_episode(1)["obs"][:, 0], [7, 8])
    assert zarr.open_group(str(path))["data/obs"].shape[0] == 7


RECORDER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from robolearn.data.store import EpisodeStore
    store = EpisodeStore.create(sys.argv[1], fps=10, flush_every=4)
    ep = 0
    while True:
        for t in range(10):
            store.add_step({"obs": np.full(3, ep * 100 + t, np.float32), "action": np.full(2, t, np.float32)})
            time.sleep(0.002)
        store.commit_episode({"seed": ep})
        print(ep, flush=True)
        ep += 1
""")


def test_sigkill_mid_episode_keeps_committed_episodes(tmp_path):
    path = tmp_path / "rec.zarr"
    proc = subprocess.Popen([sys.executable, "-c", RECORDER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        committed = -1
        while committed < 4:
            line = proc.stdout.readline()
            assert line, "recorder died"
            committed = int(line)
        time.sleep(0.011)  # land inside the next episode
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    s = EpisodeStore.open(path)
    assert s.n_episodes >= 5
    for e in range(s.n_episodes):
        np.testing.assert_array_equal(s.get_episode(e)["obs"][:, 0], e * 100 + np.arange(10))
    assert s.episode_meta("seed").tolist() == list(range(s.n_episodes))

    n = s.n_episodes
    a = EpisodeStore.open(path, mode="a")
    a.add_episode({"obs": np.full((3, 3), -1, np.float32), "action": np.zeros((3, 2), np.float32)}, meta={"seed": 77})
    s = EpisodeStore.open(path)
    assert s.n_episodes == n + 1 and s.episode_lengths[-1] == 3
    assert s.episode_meta("seed")[-1] == 77
    assert zarr.open_group(str(path))["data/obs"].shape[0] == s.n_steps


def test_summary_reports_ranges(tmp_path, episode_factory):
    path = tmp_path / "s.zarr"
    EpisodeStore.create(path, fps=5).add_episode(episode_factory(4, offset=2))
    summ = EpisodeStore.open(path).summary()
    assert summ["n_episodes"] == 1 and summ["n_steps"] == 4 and summ["fps"] == 5
    assert summ["keys"]["obs"]["min"] == [2, 2, 2] and summ["keys"]["obs"]["max"] == [5, 5, 5]
    assert summ["keys"]["action"]["dtype"] == "float32"
