"""LeRobot v3 datasets ↔ Zarr episode store, through lerobot's own dataset API (lerobot 0.4.4).

lerobot pins torch < 2.11, so this module runs in its own environment (``make lerobot-env`` builds
``.venv-lerobot``); the core install never imports it (``robolearn convert`` delegates there).

LeRobot v3 → Zarr (:func:`lerobot_to_zarr`): every episode and frame, in episode order. Low-dim
features become ``data/<key>`` (float32 stays float32; a scalar feature becomes ``(1,)``); cameras
(``video`` features, decoded from their MP4s by lerobot's ``decode_video_frames``, and ``image``
features) become ``uint8 (H, W, 3)`` image keys with our image codec. Keys are named by
:func:`robolearn.data.convert.lerobot_key_to_ours` (``observation.state`` → ``agent_pos``,
``observation.images.<cam>`` → ``<cam>_image``, ...), overridable per key. LeRobot's bookkeeping
columns (``timestamp``, ``frame_index``, ``episode_index``, ``index``, ``task_index``) are not copied;
each episode's task string(s) go to text metadata ``meta/task`` (several tasks joined by `` | ``) and
its LeRobot index to ``meta/lerobot_episode_index``. Root attributes: ``fps``, ``robot`` (``robot_type``),
``source: "lerobot"``, ``lerobot_features`` (our key → LeRobot name, dtype, shape, names). Feature
``names`` land in each key's description (LeRobot records no units).

Zarr → LeRobot v3 (:func:`zarr_to_lerobot`): a dataset made with ``LeRobotDataset.create`` /
``add_frame`` / ``save_episode`` / ``finalize``: image keys as ``video`` features (MP4, lerobot's
encoder, AV1 by default; lossy), low-dim keys with their dtype, each episode's task from ``meta/task``
(else the store's ``task`` attribute), stats and tasks written by lerobot. Numeric per-episode
metadata (seed, success) has no place in a LeRobot dataset and is not exported.

Bad sources end in one :class:`StoreError` naming the file: a parquet file without its footer
(checked with pyarrow before lerobot opens anything, since lerobot would otherwise try the Hub), a
missing or undecodable video, an unreadable ``meta/info.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from robolearn.data.convert import lerobot_key_to_ours, our_key_to_lerobot
from robolearn.data.store import EpisodeStore, KeyInfo
from robolearn.utils.errors import StoreError

#: Columns lerobot adds to every dataset; not copied into the store.
AUTO_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")
#: Video backend used to decode: PyAV ships its own FFmpeg (torchcodec needs system FFmpeg libraries).
VIDEO_BACKEND = "pyav"


def _offline() -> None:
    """Never reach the Hugging Face Hub (lerobot falls back to downloading when a local file is
    missing; the files are checked first, this is the second guard where lerobot is not imported yet),
    and keep torchvision's deprecation notice of its video decoding off the terminal."""
    import warnings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    warnings.filterwarnings("ignore", message="The video decoding and encoding capabilities of torchvision")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def check_lerobot_files(root: Path) -> dict[str, Any]:
    """Check what lerobot would read of the dataset at ``root`` before it reads it.

    Returns:
        The parsed ``meta/info.json``.

    Raises:
        StoreError: ``meta/info.json`` missing or not JSON, not codebase v3.x, or a parquet file
            (``meta/tasks.parquet``, ``meta/episodes/**``, ``data/**``) that pyarrow cannot open
            (e.g. a recording killed before its footer was written); the message names the file.
    """
    import pyarrow.parquet as pq

    info_path = root / "meta" / "info.json"
    try:
        info = json.loads(info_path.read_text())
    except FileNotFoundError:
        raise StoreError(f"{info_path}: missing (not a LeRobot dataset)") from None
    except (OSError, ValueError) as exc:
        raise StoreError(f"{info_path}: not readable JSON ({_one_line(exc)})") from None
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3"):
        raise StoreError(f"{info_path}: codebase_version {version!r}; only LeRobot v3.x datasets are read "
                         "(convert older ones with lerobot's convert_dataset_v21_to_v30 first)")
    files = [root / "meta" / "tasks.parquet", *sorted((root / "meta" / "episodes").rglob("*.parquet")),
             *sorted((root / "data").rglob("*.parquet"))]
    for f in files:
        if not f.exists():
            raise StoreError(f"{f}: missing")
        try:
            pq.ParquetFile(f).metadata
        except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for a file without footer
            raise StoreError(f"{f}: not a readable parquet file ({_one_line(exc)}); the recording was "
                             "probably interrupted before the file was closed") from None
    if not any((root / "data").rglob("*.parquet")):
        raise StoreError(f"{root / 'data'}: no parquet files")
    return info


def _to_uint8_hwc(frames) -> np.ndarray:
    """lerobot's decoded frames (float ``(N, C, H, W)`` in [0, 1]) → ``uint8 (N, H, W, C)``."""
    import torch

    x = torch.as_tensor(frames)
    if x.dtype != torch.uint8:
        x = (x.float() * 255.0).round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def lerobot_to_zarr(src: str | Path, dst: str | Path, rename: dict[str, str] | None = None,
                    image_codec: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Convert the LeRobot v3 dataset at directory ``src`` into a new store at ``dst``.

    Args:
        src: dataset root (holding ``meta/info.json``).
        dst: store directory to create (must not exist).
        rename: LeRobot feature name → our key, overriding the default rule.
        image_codec: codec of image keys (default: the store's lossless WebP).
        progress: show a progress bar over episodes.

    Returns:
        ``{"episodes", "steps", "keys": {our key: LeRobot name}}``.

    Raises:
        StoreError: see :func:`check_lerobot_files`; a missing or undecodable video file; two
            features mapping to the same key.
    """
    _offline()
    src = Path(src)
    info = check_lerobot_files(src)
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata
    from lerobot.datasets.video_utils import decode_video_frames

    from robolearn.utils.progress import progress_bar

    repo_id = f"local/{src.name}"
    try:  # metadata first: a file lerobot misses locally it would fetch from the Hub
        meta = LeRobotDatasetMetadata(repo_id, root=src)
    except Exception as exc:
        raise StoreError(f"{src}: lerobot cannot read the metadata ({_one_line(exc)})") from None
    for ep_idx in range(meta.total_episodes):
        for name in meta.video_keys:
            path = src / meta.get_video_file_path(ep_idx, name)
            if not path.exists():
                raise StoreError(f"{path}: missing (video {name!r} of episode {ep_idx})")
    try:
        ds = LeRobotDataset(repo_id, root=src, video_backend=VIDEO_BACKEND)
    except Exception as exc:
        raise StoreError(f"{src}: lerobot cannot open the dataset ({_one_line(exc)})") from None
    meta = ds.meta
    features = {k: v for k, v in meta.features.items() if k not in AUTO_COLUMNS}
    mapping: dict[str, str] = {}
    keys: dict[str, KeyInfo] = {}
    for name, feat in features.items():
        ours = lerobot_key_to_ours(name, rename)
        if ours in mapping:
            raise StoreError(f"{src}: features {mapping[ours]!r} and {name!r} both map to key {ours!r}; "
                             "pass --rename LEROBOT_NAME=KEY")
        mapping[ours] = name
        shape = tuple(int(s) for s in feat["shape"])
        names = feat.get("names")
        if feat["dtype"] in ("video", "image"):
            if len(shape) != 3 or shape[-1] not in (1, 3, 4):
                raise StoreError(f"{src / 'meta' / 'info.json'}: feature {name!r} has shape {list(shape)}; "
                                 "expected [height, width, channels]")
            cam = ours[: -len("_image")] if ours.endswith("_image") else ours
            keys[ours] = KeyInfo(shape, "uint8", "pixel", f"RGB image of camera {cam}, top row first "
                                 f"(LeRobot {feat['dtype']} feature {name!r})", codec=image_codec)
        else:
            dtype = np.dtype("float32" if feat["dtype"] in ("float16",) else feat["dtype"])
            desc = f"LeRobot feature {name!r}" + (f"; names: {names}" if names else "")
            keys[ours] = KeyInfo(shape or (1,), dtype.name, (feat.get("info") or {}).get("units"), desc)
    video_keys = set(meta.video_keys)
    store = EpisodeStore.create(dst, fps=float(meta.fps), robot=meta.robot_type, keys=keys, attrs={
        "source": "lerobot", "converted_from": str(src), "lerobot_codebase_version": info.get("codebase_version"),
        "lerobot_features": {k: {"name": n, "dtype": features[n]["dtype"], "shape": list(features[n]["shape"]),
                                 "names": features[n].get("names")} for k, n in mapping.items()},
    })
    hf = ds.hf_dataset
    steps = 0
    for ep_idx in progress_bar(range(meta.total_episodes), desc=f"convert {src.name}", unit="ep",
                               disable=not progress):
        ep = meta.episodes[ep_idx]
        start, stop = int(ep["dataset_from_index"]), int(ep["dataset_to_index"])
        try:
            rows = hf[start:stop]
        except Exception as exc:
            raise StoreError(f"{src}: episode {ep_idx}: data rows {start}-{stop - 1} do not read "
                             f"({_one_line(exc)})") from None
        timestamps = [float(t) for t in rows["timestamp"]]
        episode: dict[str, np.ndarray] = {}
        for ours, name in mapping.items():
            if name in video_keys:
                path = src / meta.get_video_file_path(ep_idx, name)
                shift = float(ep[f"videos/{name}/from_timestamp"])
                try:
                    frames = decode_video_frames(path, [shift + t for t in timestamps], ds.tolerance_s,
                                                 VIDEO_BACKEND)
                except Exception as exc:
                    raise StoreError(f"{path}: video {name!r} of episode {ep_idx} does not decode "
                                     f"({_one_line(exc)})") from None
                episode[ours] = _to_uint8_hwc(frames)
            elif keys[ours].is_image:  # an "image" feature: frames in the parquet rows
                import torch

                episode[ours] = _to_uint8_hwc(torch.stack([torch.as_tensor(x) for x in rows[name]]))
            else:
                import torch

                col = torch.stack([torch.as_tensor(x) for x in rows[name]]).numpy()
                episode[ours] = col.reshape(len(timestamps), *keys[ours].shape).astype(keys[ours].dtype)
            if len(episode[ours]) != stop - start:
                raise StoreError(f"{src}: episode {ep_idx}: {name!r} has {len(episode[ours])} frames, "
                                 f"the episode {stop - start}")
        tasks = list(ep.get("tasks") or [])
        store.add_episode(episode, {"task": " | ".join(map(str, tasks)), "lerobot_episode_index": int(ep_idx)})
        steps += stop - start
    store.close()
    return {"episodes": meta.total_episodes, "steps": steps, "keys": mapping}


def zarr_to_lerobot(src: str | Path, dst: str | Path, rename: dict[str, str] | None = None,
                    vcodec: str = "libsvtav1", repo_id: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Write the store at ``src`` as a new LeRobot v3 dataset at directory ``dst`` with lerobot's API.

    Args:
        src: our store (directory or ``.zarr.zip``).
        dst: dataset root to create (must not exist).
        rename: our key → LeRobot feature name, overriding :func:`robolearn.data.convert.our_key_to_lerobot`.
        vcodec: lerobot's video codec (``libsvtav1``, lerobot's default; ``h264``; ``hevc``).
        repo_id: the dataset's ``repo_id`` (default ``robolearn/<dst name>``).
        progress: show a progress bar over episodes.

    Returns:
        ``{"episodes", "steps", "keys": {our key: LeRobot name}}``.

    Raises:
        StoreError: the store does not open or decode, has no fps (LeRobot needs an integer fps),
            or two keys map to the same feature name.
    """
    _offline()
    import datasets
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from robolearn.utils.progress import progress_bar

    datasets.disable_progress_bars()  # one bar per episode's parquet rows otherwise; ours counts episodes

    store = EpisodeStore.open(src)
    fps = store.fps
    if fps is None or abs(float(fps) - round(float(fps))) > 1e-9 or round(float(fps)) < 1:
        raise StoreError(f"{src}: fps is {fps!r}; LeRobot datasets need a whole number of frames per second")
    mapping: dict[str, str] = {}
    features: dict[str, dict] = {}
    for k in store.keys:
        info = store.key_info(k)
        name = our_key_to_lerobot(k, info.is_image, rename)
        if name in features:
            raise StoreError(f"{src}: keys {mapping[name]!r} and {k!r} both map to LeRobot feature {name!r}; "
                             "pass --rename KEY=LEROBOT_NAME")
        mapping[name] = k
        if info.is_image:
            features[name] = {"dtype": "video", "shape": tuple(info.shape), "names": ["height", "width", "channels"]}
        else:  # lerobot compares shapes as tuples
            features[name] = {"dtype": info.dtype, "shape": tuple(info.shape) or (1,), "names": None}
    tasks = store.episode_meta("task") if "task" in store.text_meta_keys else None
    default_task = str(store.attrs.get("task") or "robolearn episode")
    try:
        ds = LeRobotDataset.create(repo_id=repo_id or f"robolearn/{Path(dst).name}", fps=int(round(float(fps))),
                                   features=features, root=dst, robot_type=store.attrs.get("robot"),
                                   use_videos=True, vcodec=vcodec)
    except ValueError as exc:
        raise StoreError(f"{dst}: lerobot refuses the features ({_one_line(exc)})") from None
    steps = 0
    for e in progress_bar(range(store.n_episodes), desc=f"convert {Path(src).name}", unit="ep",
                          disable=not progress):
        episode = store.get_episode(e)
        task = (str(tasks[e]) if tasks is not None else "") or default_task
        T = len(next(iter(episode.values())))
        for t in range(T):
            frame = {name: episode[k][t].reshape(features[name]["shape"]) for name, k in mapping.items()}
            frame["task"] = task
            ds.add_frame(frame)
        ds.save_episode()
        steps += T
    ds.finalize()
    store.close()
    return {"episodes": store.n_episodes, "steps": steps, "keys": {k: n for n, k in mapping.items()}}
