import hashlib
import re
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


# ------------------------------------------------------------------ corrupt chunks and NaN/Inf

IMG = (8, 8, 3)


def _chunked_store(path, fmt=2, codec="webp"):
    """3 episodes of 5, 9, 3 steps (ends 5, 14, 17); obs in chunks of 4 steps, img one frame a chunk."""
    rng = np.random.default_rng(0)
    store = EpisodeStore.create(path, zarr_format=fmt)
    store.define_key("obs", KeyInfo((3,), "float32"), chunk_steps=4)
    store.define_key("img", KeyInfo(IMG, "uint8", codec=codec))
    for e, T in enumerate([5, 9, 3]):
        store.add_episode({"obs": rng.normal(size=(T, 3)).astype(np.float32),
                           "img": rng.integers(0, 256, (T, *IMG), dtype=np.uint8)}, meta={"seed": e})
    return path


def _chunk_file(path, key, row):
    arr = zarr.open_group(str(path), mode="r")[key]
    coords = (row // arr.chunks[0],) + (0,) * (arr.ndim - 1)
    return path / key / arr.metadata.encode_chunk_key(coords)


def _damage(file: Path, how: str) -> None:
    raw = file.read_bytes()
    if how == "truncated":
        file.write_bytes(raw[: len(raw) // 2])
    else:  # the same number of random bytes
        file.write_bytes(np.random.default_rng(1).integers(0, 256, len(raw), dtype=np.uint8).tobytes())


CORRUPT_CASES = [(fmt, codec, key, how) for fmt, codec in [(2, "webp"), (2, "png"), (2, "jpeg"), (3, "webp")]
                 for key in ("obs", "img") for how in ("truncated", "random") if key == "img" or codec == "webp"]


@pytest.mark.parametrize("fmt,codec,key,how", CORRUPT_CASES)
def test_a_corrupt_chunk_names_store_key_chunk_steps_and_episodes(tmp_path, fmt, codec, key, how):
    path = _chunked_store(tmp_path / "s.zarr", fmt, codec)
    # obs chunk 1 holds steps 4-7 (episodes 0 and 1); img chunk 7 holds step 7 (episode 1).
    row, held = (4, r"steps 4-7, episodes 0-1") if key == "obs" else (7, r"step 7, episode 1")
    chunk = _chunk_file(path, f"data/{key}", row)
    _damage(chunk, how)
    before = tree_digest(path)
    store = EpisodeStore.open(path)
    name = chunk.relative_to(path).as_posix()
    pattern = rf"^{re.escape(str(path))}: key 'data/{key}': chunk {name} \({held}\) is corrupt \(.+\)"
    reads = [lambda: store.get_episode(1), store.load, lambda: store.load([key])]
    if key == "obs":  # the chunk also holds episode 0's last step; summary reads low-dim keys only
        reads += [lambda: store.get_episode(0, ["obs"]), store.summary]
    for read in reads:
        with pytest.raises(StoreError, match=pattern):
            read()
    assert store.get_episode(2)[key].shape[0] == 3  # other chunks still read
    assert tree_digest(path) == before


def test_a_truncated_tiny_blosc_chunk_is_caught_by_its_header(tmp_path):
    # Blosc stores chunks this small verbatim and would decode the truncated one from past its end.
    path = _chunked_store(tmp_path / "s.zarr")
    chunk = _chunk_file(path, "data/obs", 0)
    chunk.write_bytes(chunk.read_bytes()[:-1])
    with pytest.raises(StoreError, match=r"chunk data/obs/0\.0 \(steps 0-3, episode 0\).*Blosc header says \d+ bytes"):
        EpisodeStore.open(path).get_episode(0)


def test_corrupt_metadata_arrays_and_files_are_named(tmp_path):
    path = _chunked_store(tmp_path / "s.zarr")
    _damage(_chunk_file(path, "meta/seed", 0), "random")
    store = EpisodeStore.open(path)
    with pytest.raises(StoreError, match=r"key 'meta/seed': chunk meta/seed/0 \(episodes 0-2\) is corrupt"):
        store.episode_meta("seed")
    _damage(_chunk_file(path, "meta/episode_ends", 0), "truncated")
    with pytest.raises(StoreError, match=r"key 'meta/episode_ends': chunk meta/episode_ends/0 \(entries 0-2\)"):
        EpisodeStore.open(path)
    path = _chunked_store(tmp_path / "t.zarr")
    _damage(path / "data" / "obs" / ".zarray", "random")
    with pytest.raises(StoreError, match=rf"^{re.escape(str(path))}: metadata file data/obs/\.zarray is corrupt"):
        EpisodeStore.open(path)


def test_a_corrupt_chunk_in_a_zip_store_is_named(tmp_path):
    import zipfile

    path = _chunked_store(tmp_path / "s.zarr")
    zpath = tmp_path / "s.zarr.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for f in sorted(path.rglob("*")):
            if f.is_file():
                name = f.relative_to(path).as_posix()
                z.writestr(name, f.read_bytes()[:10] if name == "data/obs/2.0" else f.read_bytes())
    before = hashlib.sha256(zpath.read_bytes()).hexdigest()
    store = EpisodeStore.open(zpath)
    with pytest.raises(StoreError, match=rf"^{re.escape(str(zpath))}: key 'data/obs': chunk data/obs/2\.0 \(steps 8-11, episode 1\)"):
        store.load()
    n_chunks, bad = store.check()
    assert [(b.key, b.chunk, b.start, b.stop, b.episodes) for b in bad] == [("data/obs", "data/obs/2.0", 8, 12, (1, 1))]
    store.close()
    assert hashlib.sha256(zpath.read_bytes()).hexdigest() == before


@pytest.mark.parametrize("fmt", [2, 3])
def test_check_lists_every_bad_chunk(tmp_path, fmt):
    path = _chunked_store(tmp_path / "s.zarr", fmt)
    n_clean, none = EpisodeStore.open(path).check()
    # 17 image frames, 5 obs chunks, one chunk each of meta/episode_ends and meta/seed
    assert (n_clean, none) == (17 + 5 + 2, [])
    for key, row, how in [("data/obs", 4, "truncated"), ("data/obs", 16, "random"), ("data/img", 0, "random"),
                          ("data/img", 13, "truncated"), ("meta/seed", 0, "truncated")]:
        _damage(_chunk_file(path, key, row), how)
    before = tree_digest(path)
    n_chunks, bad = EpisodeStore.open(path).check(block_bytes=1)
    assert n_chunks == n_clean
    assert [(b.key, b.start, b.stop, b.episodes) for b in bad] == [
        ("data/img", 0, 1, (0, 0)), ("data/img", 13, 14, (1, 1)),
        ("data/obs", 4, 8, (0, 1)), ("data/obs", 16, 17, (2, 2)), ("meta/seed", 0, 3, None)]
    assert all(b.chunk == _chunk_file(path, b.key, b.start).relative_to(path).as_posix() for b in bad)
    assert bad[2].where() == f"chunk {bad[2].chunk} (steps 4-7, episodes 0-1)"
    assert EpisodeStore.open(path).check()[1] == bad  # whole blocks give the same list
    assert tree_digest(path) == before


def test_summary_counts_nonfinite_values_and_names_their_episodes(tmp_path, episode_factory):
    path = tmp_path / "s.zarr"
    store = EpisodeStore.create(path)
    for e in range(4):
        ep = episode_factory(5, offset=e)
        if e == 1:
            ep["obs"][2, 0] = np.nan
        if e == 3:
            ep["obs"][4, 1] = np.inf
            ep["action"][:, 1] = -np.inf
        store.add_episode({**ep, "count": np.arange(5, dtype=np.int32)})
    keys = EpisodeStore.open(path).summary()["keys"]
    assert keys["obs"]["nonfinite"] == {"count": 2, "nan": 1, "inf": 1, "episodes": [1, 3]}
    assert keys["action"]["nonfinite"] == {"count": 5, "nan": 0, "inf": 5, "episodes": [3]}
    assert keys["obs"]["min"] == [0, 0, 0] and keys["obs"]["max"] == [7, 6, 7]  # of the finite values (7 is Inf)
    assert keys["action"]["min"] == [0, 0] and keys["action"]["max"] == pytest.approx([3.4, 2.4])
    assert "nonfinite" not in keys["count"] and keys["count"]["max"] == 4
    clean = tmp_path / "clean.zarr"
    EpisodeStore.create(clean).add_episode(episode_factory(3))
    assert EpisodeStore.open(clean).summary()["keys"]["obs"]["nonfinite"] == {"count": 0, "nan": 0, "inf": 0,
                                                                              "episodes": []}


def test_appending_to_a_store_whose_last_chunk_is_corrupt_is_refused_before_any_write(tmp_path):
    path = _chunked_store(tmp_path / "s.zarr")  # 17 steps: obs chunk 4 (step 16) is partly filled
    _damage(_chunk_file(path, "data/obs", 16), "truncated")
    before = tree_digest(path)
    with pytest.raises(StoreError, match=r"key 'data/obs': chunk data/obs/4\.0 \(step 16, episode 2\) is corrupt"):
        EpisodeStore.open(path, mode="a")
    assert tree_digest(path) == before
    # A bad chunk that an append does not rewrite leaves appending possible.
    path = _chunked_store(tmp_path / "t.zarr")
    _damage(_chunk_file(path, "data/obs", 0), "random")
    EpisodeStore.open(path, mode="a").add_episode({"obs": np.zeros((2, 3), np.float32),
                                                   "img": np.zeros((2, *IMG), np.uint8)})
    assert EpisodeStore.open(path).get_episode(3)["obs"].shape == (2, 3)
