"""robomimic HDF5 → Zarr episode store (the datasets behind Diffusion Policy's robosuite results).

Source layout (robomimic's ``dataset_states_to_obs`` output)::

    data                  attrs: total (steps), env_args (JSON: env_name, type, env_kwargs)
      demo_<i>            attrs: num_samples; one per demonstration
        actions           (T, A)
        rewards, dones    (T,)
        states            (T, S) flattened MuJoCo state (optional)
        obs/<key>         (T, ...) low-dim float64, or images <camera>_image uint8 (T, H, W, 3)
        next_obs/<key>    the next step's observation (not copied: it is obs shifted by one step)
    mask/<split>          demo names as byte strings (train, valid, or filter keys)

What the store gets: one episode per demo in the demos' numeric order (``demo_10`` after ``demo_9``);
``data/action`` (float32), ``data/<key>`` for each ``obs/<key>`` (low-dim as float32, images as
``uint8 (H, W, C)`` with our image codec), ``data/reward`` and ``data/done`` as ``(1,)`` float32,
``data/states`` kept float64 (a simulator state to reset to); per-episode ``meta/demo`` (text: the
demo's name), ``meta/mask_<split>`` (bool: whether the demo is in ``mask/<split>``) for every split;
root attributes ``env_args`` (the parsed JSON), ``env_name``, ``source: "robomimic"`` and ``fps``
from ``env_kwargs.control_freq`` (robosuite's default 20 Hz when absent).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from robolearn.data.store import EpisodeStore, KeyInfo, is_image_key
from robolearn.utils.errors import StoreError

_DEMO = re.compile(r"^demo_(\d+)$")


def _demo_names(path: Path, data) -> list[str]:
    names = [k for k in data.keys() if _DEMO.match(k)]
    if not names:
        raise StoreError(f"{path}: group 'data' holds no demo_<i> groups")
    return sorted(names, key=lambda k: int(_DEMO.match(k).group(1)))


def _key_info(key: str, value: np.ndarray, image_codec: str | None) -> tuple[KeyInfo, np.dtype]:
    """Store description and dtype of robomimic array ``key`` with per-step shape/dtype of ``value``."""
    shape = tuple(value.shape[1:])
    if is_image_key(shape, value.dtype):
        cam = key[: -len("_image")] if key.endswith("_image") else key
        return KeyInfo(shape, "uint8", "pixel", f"RGB image of camera {cam}, top row first (robomimic obs/{key})",
                       codec=image_codec), np.dtype(np.uint8)
    dtype = np.dtype(np.float64 if key == "states" else np.float32)
    if value.dtype.kind not in "biuf":
        raise StoreError(f"key '{key}' has dtype {value.dtype}; expected a numeric dtype")
    return KeyInfo(shape, dtype.name, None, f"robomimic {key}"), dtype


def _episode_arrays(demo, name: str) -> dict[str, np.ndarray]:
    """``{store key: (T, ...) array}`` of one demo group (read whole)."""
    if "actions" not in demo:
        raise StoreError(f"{name}: missing dataset 'actions'")
    out = {"action": demo["actions"][()]}
    if "obs" in demo:
        for k in demo["obs"].keys():
            out[k] = demo["obs"][k][()]
    for src, dst in (("rewards", "reward"), ("dones", "done")):
        if src in demo:
            out[dst] = demo[src][()].reshape(-1, 1)
    if "states" in demo:
        out["states"] = demo["states"][()]
    return out


def robomimic_to_zarr(src: str | Path, dst: str | Path, image_codec: str | None = None,
                      progress: bool = True) -> dict[str, Any]:
    """Convert a robomimic HDF5 file into a new Zarr episode store at ``dst``.

    Args:
        src: the ``.hdf5`` file.
        dst: the store directory to create (it must not exist; :func:`robolearn.data.convert.staged_output`
            gives a staging path).
        image_codec: codec of image keys (default: the store's lossless WebP).
        progress: show a progress bar over demos.

    Returns:
        ``{"episodes", "steps", "keys", "masks"}``.

    Raises:
        StoreError: the file does not open as HDF5 (truncated, not HDF5), a demo's arrays have
            different lengths or disagree with its ``num_samples``, keys differ between demos, or an
            array does not read (a truncated file); the message names the file and the demo/key.
    """
    import h5py

    from robolearn.utils.progress import progress_bar

    src = Path(src)
    try:
        f = h5py.File(src, "r")
    except (OSError, ValueError) as exc:
        raise StoreError(f"{src}: not a readable HDF5 file ({' '.join(str(exc).split())})") from None
    with f:
        if "data" not in f:
            raise StoreError(f"{src}: missing group 'data' (not a robomimic dataset)")
        data = f["data"]
        try:
            env_args = json.loads(data.attrs.get("env_args", "{}"))
        except (TypeError, ValueError) as exc:
            raise StoreError(f"{src}: data attribute 'env_args' is not JSON ({exc})") from None
        demos = _demo_names(src, data)
        masks: dict[str, set[str]] = {}
        if "mask" in f:
            for split in f["mask"].keys():
                masks[split] = {m.decode() if isinstance(m, bytes) else str(m) for m in f["mask"][split][()]}
        fps = float((env_args.get("env_kwargs") or {}).get("control_freq", 20))
        store = EpisodeStore.create(dst, fps=fps, attrs={
            "source": "robomimic", "env_args": env_args, "env_name": env_args.get("env_name"),
            "converted_from": str(src)})
        keys: dict[str, np.dtype] | None = None
        steps = 0
        for name in progress_bar(demos, desc=f"convert {src.name}", unit="demo", disable=not progress):
            where = f"{src}: data/{name}"
            try:
                arrays = _episode_arrays(data[name], where)
            except StoreError:
                raise
            except (OSError, KeyError, ValueError, RuntimeError) as exc:  # h5py's errors on a truncated file
                raise StoreError(f"{where}: does not read ({type(exc).__name__}: {' '.join(str(exc).split())}); "
                                 "the file is truncated or corrupt") from None
            lengths = {k: len(v) for k, v in arrays.items()}
            if len(set(lengths.values())) != 1:
                raise StoreError(f"{where}: arrays of different lengths {lengths}")
            T = lengths["action"]
            declared = data[name].attrs.get("num_samples")
            if declared is not None and int(declared) != T:
                raise StoreError(f"{where}: num_samples is {int(declared)} but 'actions' has {T} steps")
            if keys is None:
                keys = {}
                for k, v in arrays.items():
                    try:
                        info, dtype = _key_info(k, v, image_codec)
                    except StoreError as exc:
                        raise StoreError(f"{where}: {exc}") from None
                    store.define_key(k, info)
                    keys[k] = dtype
            elif set(arrays) != set(keys):
                raise StoreError(f"{where}: keys {sorted(arrays)} differ from the first demo's {sorted(keys)}")
            episode = {k: np.asarray(v, dtype=keys[k]) for k, v in arrays.items()}
            meta: dict[str, Any] = {"demo": name}
            meta.update({f"mask_{split}": name in members for split, members in masks.items()})
            store.add_episode(episode, meta)
            steps += T
        total = data.attrs.get("total")
        if total is not None and int(total) != steps:
            raise StoreError(f"{src}: data attribute 'total' is {int(total)} but the demos hold {steps} steps")
        store.close()
    return {"episodes": len(demos), "steps": steps, "keys": sorted(keys or {}), "masks": sorted(masks)}
