"""Zarr episode store: the on-disk format of every demonstration dataset.

Layout (compatible with Diffusion Policy's replay buffer, so their stores open unchanged)::

    <store>/
      data/<key>          time on axis 0, every episode concatenated; all keys the same length
      meta/episode_ends   int64, cumulative end index of each episode (the commit point)
      meta/<name>         optional per-episode metadata, one entry per episode (seed, success, ...)
                          or per-episode text (task instruction, ...): see "Text metadata" below

Root attributes hold ``schema_version``, ``fps`` (control frequency, Hz), ``robot``,
``action_space`` and free-form extras; each ``data/<key>`` array's attributes hold ``units`` and
``description``.

Images. A key whose per-step shape is ``(H, W, C)`` with ``C`` in 1, 3 or 4 and dtype ``uint8`` is an
image: it is stored one frame per chunk, compressed by an image codec from ``imagecodecs`` chosen per
key (:data:`IMAGE_CODECS`; lossless WebP by default, JPEG or JPEG 2000 for real cameras where lossy
frames are acceptable). The codec is recorded in the array's metadata, so any zarr reader with
``imagecodecs`` registered decodes it; Diffusion Policy's image datasets (JPEG 2000) open the same
way. In format-3 stores images fall back to lossless Blosc.

Format written: zarr format 2 directories by default (readable by zarr 2.x tooling such as Diffusion
Policy's and by zarr 3), format 3 on request. Read: format 2 and 3 directories and ``.zarr.zip``
files (read-only).

Crash safety. Steps are buffered in memory and flushed to the arrays in blocks; an episode becomes
visible only when its end index is appended to ``meta/episode_ends``, which is written last. Every
file write is atomic (zarr's local store writes a temporary file and renames it). So after a kill at
any point:

* rows past the last committed end (a partial episode) are ignored when the store is opened and
  trimmed away before the next append;
* a torn commit (``episode_ends`` resized but its new entry not yet written) shows as a trailing
  fill value (-1 in stores we create) and is ignored likewise.

Opening never writes: a store that fails validation is left exactly as it was.

Text metadata. A per-episode string (a task instruction, an operator) is stored as an int32 code
array ``meta/<name>`` whose attributes hold ``{"text": true, "values": [str, ...]}``: episode ``i``'s
string is ``values[code[i]]``, code -1 the empty string (an episode committed without it). Readers
that know nothing of text metadata see an ordinary integer array; :meth:`EpisodeStore.episode_meta`
returns the strings. New strings are added to ``values`` before the commit point, so a crash leaves
at most an unused entry.

Corrupt chunks. Every read decodes through :meth:`EpisodeStore._read`, which turns a chunk that does
not decode (or a Blosc chunk whose header disagrees with its file size: a truncated chunk that Blosc
stored uncompressed would otherwise decode to garbage without an error) into a :class:`StoreError`
naming the store, the key, the chunk file and the steps and episodes it holds.
:meth:`EpisodeStore.check` decodes every chunk and lists all bad ones (``robolearn inspect --check``).
A chunk file that is absent is not an error: zarr reads it as the fill value and does not write
chunks that hold only the fill value.
"""

from __future__ import annotations

import itertools
import os
import shutil
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from robolearn.utils.errors import StoreError

SCHEMA_VERSION = 1
_TORN_FILL = -1  # fill value of meta/episode_ends in stores we create: never a valid end index


@dataclass(frozen=True)
class KeyInfo:
    """Description of one ``data/<key>`` array.

    Attributes:
        shape: per-step shape (without the time axis).
        dtype: numpy dtype string, e.g. ``"float32"``.
        units: SI units or a short convention (``"m"``, ``"rad"``, ``"xyzw"``), or ``None``.
        description: one line for humans.
    """

    shape: tuple[int, ...]
    dtype: str
    units: str | None = None
    description: str | None = None
    codec: str | None = None

    @property
    def is_image(self) -> bool:
        """``uint8 (H, W, C)`` with ``C`` in 1, 3, 4: stored one frame per chunk with an image codec."""
        return is_image_key(self.shape, self.dtype)


@dataclass(frozen=True)
class BadChunk:
    """One chunk file of a store that cannot be decoded.

    Attributes:
        key: array of the chunk, ``"data/<key>"`` or ``"meta/<name>"``.
        chunk: the chunk file, relative to the store (the member name in a ``.zarr.zip``), e.g.
            ``"data/obs/1.0"`` (format 2) or ``"data/obs/c/1/0"`` (format 3).
        start, stop: rows ``[start, stop)`` along axis 0 that the chunk holds (steps for ``data/``
            keys, episodes for ``meta/`` keys), cut to the committed rows.
        episodes: ``(first, last)`` committed episodes (inclusive) whose steps the chunk holds, or
            ``None`` where unknown.
        reason: why it does not decode (the codec's error, or the Blosc header's size mismatch).
    """

    key: str
    chunk: str
    start: int
    stop: int
    episodes: tuple[int, int] | None
    reason: str

    def where(self) -> str:
        """``"chunk data/obs/1.0 (steps 4-7, episodes 0-1)"``: the chunk file and what it holds."""
        def span(one: str, many: str, first: int, last: int) -> str:
            return f"{one} {first}" if first == last else f"{many} {first}-{last}"

        if self.key.startswith("data/"):
            held = span("step", "steps", self.start, self.stop - 1)
            if self.episodes is not None:
                held += ", " + span("episode", "episodes", *self.episodes)
        elif self.key == "meta/episode_ends":
            held = span("entry", "entries", self.start, self.stop - 1)
        else:
            held = span("episode", "episodes", self.start, self.stop - 1)
        return f"chunk {self.chunk} ({held})"


def is_image_key(shape, dtype) -> bool:
    """Whether a per-step ``shape`` and ``dtype`` describe an image (``uint8 (H, W, C)``, C in 1, 3, 4)."""
    shape = tuple(shape)
    return np.dtype(dtype) == np.uint8 and len(shape) == 3 and shape[-1] in (1, 3, 4)


#: Image codecs by name: ``imagecodecs.numcodecs`` class and its arguments. ``webp`` and ``png`` are
#: lossless; ``jpeg`` (quality 90) and ``jpeg2k`` (level 50, Diffusion Policy's choice) are lossy.
IMAGE_CODECS = {
    "webp": ("Webp", {"level": 100, "lossless": True}),
    "png": ("Png", {}),
    "jpeg": ("Jpeg", {"level": 90}),
    "jpeg2k": ("Jpeg2k", {"level": 50}),
}
DEFAULT_IMAGE_CODEC = "webp"
_CODECS_REGISTERED = False


def register_image_codecs() -> None:
    """Register ``imagecodecs``' numcodecs codecs (idempotent), so image arrays can be decoded."""
    global _CODECS_REGISTERED
    if not _CODECS_REGISTERED:
        from imagecodecs.numcodecs import register_codecs

        register_codecs(verbose=False)
        _CODECS_REGISTERED = True


def image_codec(name: str):
    """The numcodecs codec object for image codec ``name`` (a key of :data:`IMAGE_CODECS`).

    Raises:
        StoreError: unknown codec name.
    """
    if name not in IMAGE_CODECS:
        raise StoreError(f"unknown image codec {name!r}; known: {sorted(IMAGE_CODECS)}")
    import imagecodecs.numcodecs as icn

    cls_name, kwargs = IMAGE_CODECS[name]
    return getattr(icn, cls_name)(**kwargs)


def _is_zip(path: Path) -> bool:
    return path.suffix == ".zip"


def _open_zarr_group(path: Path, mode: str):
    """Open the zarr group at ``path`` (a directory or a ``.zip`` file) without creating anything."""
    import zarr

    if not path.exists():
        raise StoreError(f"{path}: no such file or directory")
    try:
        if _is_zip(path):
            if mode != "r":
                raise StoreError(f"{path}: .zarr.zip stores are read-only; copy it to a directory to append")
            store = zarr.storage.ZipStore(path, mode="r")
            return zarr.open_group(store, mode="r")
        return zarr.open_group(str(path), mode=mode)
    except StoreError:
        raise
    except Exception as exc:  # zarr raises several types for "not a group"
        raise StoreError(f"{path}: not a zarr store ({type(exc).__name__}: {exc})") from None


class EpisodeStore:
    """A Zarr episode dataset: open, read, and append episodes with crash-safe commits.

    Create with :meth:`create`, open with :meth:`open`. Reading::

        store = EpisodeStore.open("demos.zarr")
        store.n_episodes, store.n_steps, store.keys
        ep = store.get_episode(0)            # {key: (T, *shape)}
        arrays = store.load()                 # {key: (n_steps, *shape)}, committed steps only

    Writing (mode ``"a"``)::

        for t in range(T):
            store.add_step({"obs": o, "action": a})
        store.commit_episode(meta={"seed": 3, "success": True})   # or store.discard_episode()

    Args:
        group: an open zarr group (use :meth:`create` / :meth:`open`).
        path: filesystem path of the store, used in error messages.
        writable: whether appends are allowed.
        flush_every: buffered steps written to disk in blocks of this many.
    """

    def __init__(self, group, path: Path, writable: bool, flush_every: int = 256):
        register_image_codecs()
        self._root = group
        self.path = Path(path)
        self.writable = writable
        self.flush_every = int(flush_every)
        self._buffer: dict[str, list[np.ndarray]] = {}
        self._buffer_len = 0
        self._flushed_in_episode = 0  # rows of the open episode already on disk
        self._arrays: dict | None = None  # cached handles of data/<key>; reset by define_key
        self._zip: zipfile.ZipFile | None = None  # raw chunk headers of a .zarr.zip, opened on first use
        try:
            self._ends = self._read_committed_ends()
            self._validate()
        except StoreError:
            raise
        except Exception as exc:  # zarr fails on unreadable metadata with JSON, key and type errors
            bad = self._unparsable_metadata()
            raise StoreError(f"{self.path}: {'metadata file ' + bad if bad else 'metadata'} is corrupt "
                             f"({_describe(exc)}); restore it from a copy") from exc

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        *,
        fps: float | None = None,
        robot: str | None = None,
        action_space: Mapping[str, Any] | None = None,
        attrs: Mapping[str, Any] | None = None,
        keys: Mapping[str, KeyInfo] | None = None,
        zarr_format: int = 2,
        overwrite: bool = False,
        flush_every: int = 256,
    ) -> "EpisodeStore":
        """Create an empty store.

        Args:
            path: directory to create (conventionally ending in ``.zarr``).
            fps: control frequency of the recording in Hz.
            robot: robot name.
            action_space: JSON-able description of the action (e.g. ``{"type": "eef_delta", ...}``).
            attrs: extra JSON-able root attributes.
            keys: arrays to declare now; others are declared on the first :meth:`add_step`.
            zarr_format: 2 (default, readable by zarr 2.x tools) or 3.
            overwrite: replace an existing store at ``path``.

        Raises:
            StoreError: ``path`` exists and ``overwrite`` is false, or is a ``.zip``.
        """
        import zarr

        path = Path(path)
        if _is_zip(path):
            raise StoreError(f"{path}: cannot create a .zip store; create a directory store instead")
        if path.exists():
            if not overwrite:
                raise StoreError(f"{path}: already exists (pass overwrite=True to replace it)")
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        root = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
        root.create_group("data")
        meta = root.create_group("meta")
        meta.create_array(
            "episode_ends", shape=(0,), chunks=(4096,), dtype="int64", fill_value=_TORN_FILL,
            **_compressor_kwargs(zarr_format, "int64"),
        )
        root.attrs.update(
            {
                "schema_version": SCHEMA_VERSION,
                "fps": fps,
                "robot": robot,
                "action_space": dict(action_space) if action_space else None,
                "created_with": "robolearn",
                **(dict(attrs) if attrs else {}),
            }
        )
        store = cls(root, path, writable=True, flush_every=flush_every)
        for name, info in (keys or {}).items():
            store.define_key(name, info)
        return store

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r", flush_every: int = 256) -> "EpisodeStore":
        """Open and validate an existing store.

        Args:
            path: a zarr directory (format 2 or 3) or a ``.zarr.zip`` file.
            mode: ``"r"`` read-only or ``"a"`` to append episodes.

        Raises:
            StoreError: the path is missing or not a zarr group, ``data``/``meta/episode_ends`` is
                missing, an array has a non-numeric dtype, ``episode_ends`` is not strictly
                increasing or points past the data, or arrays are shorter than the committed
                steps; with ``mode="a"`` also a corrupt last chunk (which an append rewrites). The
                store is not modified.
        """
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', got {mode!r}")
        path = Path(path)
        # Opening a zarr group, even in r+ mode, writes nothing; __init__ validates before any write.
        group = _open_zarr_group(path, "r" if mode == "r" else "r+")
        store = cls(group, path, writable=mode == "a", flush_every=flush_every)
        if mode == "a":
            store._check_tail_chunks()
        return store

    # ------------------------------------------------------------------ validation
    def _group(self, name: str):
        try:
            return self._root[name]
        except KeyError:
            raise StoreError(f"{self.path}: missing key '{name}'") from None

    def _read_committed_ends(self) -> np.ndarray:
        meta = self._group("meta")
        if "episode_ends" not in meta:
            raise StoreError(f"{self.path}: missing key 'meta/episode_ends'")
        arr = meta["episode_ends"]
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise StoreError(
                f"{self.path}: key 'meta/episode_ends' must be a 1-D integer array, "
                f"got shape {arr.shape} dtype {arr.dtype}"
            )
        ends = self._read("meta/episode_ends", arr, 0, arr.shape[0]).astype(np.int64)
        # A torn commit leaves trailing fill values (-1) behind: not committed, ignore them.
        n = len(ends)
        while n > 0 and ends[n - 1] == _TORN_FILL:
            n -= 1
        return ends[:n]

    def _unparsable_metadata(self) -> str | None:
        """The first zarr metadata file (``.zarray``, ``.zattrs``, ``.zgroup``, ``zarr.json``) of the
        root, its groups or their arrays that is not valid JSON, relative to the store; or ``None``."""
        import json

        names = (".zgroup", ".zattrs", ".zarray", "zarr.json")
        if _is_zip(self.path):
            with zipfile.ZipFile(self.path, "r") as z:
                members = [m for m in z.namelist() if m.rsplit("/", 1)[-1] in names and m.count("/") <= 2]
                read = z.read
        else:
            members = [f.relative_to(self.path).as_posix() for pattern in ("", "*/", "*/*/") for name in names
                       for f in self.path.glob(pattern + name)]
            read = (lambda m: (self.path / m).read_bytes())  # noqa: E731
        for m in sorted(members):
            try:
                json.loads(read(m))
            except ValueError:
                return m
        return None

    def _validate(self) -> None:
        data = self._group("data")
        if not hasattr(data, "arrays"):
            raise StoreError(f"{self.path}: key 'data' must be a group")
        ends = self._ends
        if len(ends) and (ends[0] <= 0 or np.any(np.diff(ends) <= 0)):
            raise StoreError(
                f"{self.path}: key 'meta/episode_ends' must be strictly increasing and positive, got "
                f"{ends[:10].tolist()}{'...' if len(ends) > 10 else ''}"
            )
        committed = int(ends[-1]) if len(ends) else 0
        for name, arr in data.arrays():
            if arr.dtype.kind not in "biuf":
                raise StoreError(
                    f"{self.path}: key 'data/{name}' has dtype {arr.dtype}; expected a numeric dtype"
                )
            if arr.ndim == 0:
                raise StoreError(f"{self.path}: key 'data/{name}' is a scalar; expected time on axis 0")
            if arr.shape[0] < committed:
                raise StoreError(
                    f"{self.path}: key 'data/{name}' has {arr.shape[0]} steps but 'meta/episode_ends' "
                    f"commits {committed}: arrays of unequal length"
                )
            declared = arr.attrs.get("dtype")
            if declared is not None and np.dtype(declared) != arr.dtype:
                raise StoreError(
                    f"{self.path}: key 'data/{name}' has dtype {arr.dtype} but its attributes declare {declared}"
                )
        meta = self._group("meta")
        for name, arr in meta.arrays():
            if name != "episode_ends" and arr.shape[0] < len(ends):
                raise StoreError(
                    f"{self.path}: key 'meta/{name}' has {arr.shape[0]} entries for {len(ends)} episodes"
                )
        if not list(data.array_keys()) and committed > 0:
            raise StoreError(f"{self.path}: 'meta/episode_ends' commits {committed} steps but 'data' has no arrays")

    # ------------------------------------------------------------------ decoding chunks
    def _read(self, name: str, arr, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` of the array ``name`` (``"data/<key>"`` or ``"meta/<name>"``), decoded.

        Raises:
            StoreError: a chunk of the range is truncated or does not decode; the message names the
                store, the key, the chunk file and the steps and episodes it holds.
        """
        if stop > start and _blosc_sized(arr):
            for coords in _chunk_coords(arr, start, stop):
                reason = self._header_problem(name, arr, coords)
                if reason is not None:
                    raise self._chunk_error(self._bad_chunk(name, arr, coords, reason))
        try:
            return np.asarray(arr[start:stop])
        except MemoryError:
            raise
        except Exception as exc:  # each codec raises its own type (RuntimeError, WebpError, ValueError, ...)
            bad = self._bad_chunks(name, arr, start, stop, limit=1)
            if bad:
                raise self._chunk_error(bad[0]) from exc
            raise StoreError(f"{self.path}: key '{name}': rows {start}-{stop - 1} do not decode "
                             f"({_describe(exc)})") from exc

    def _chunk_error(self, bad: BadChunk) -> StoreError:
        return StoreError(f"{self.path}: key '{bad.key}': {bad.where()} is corrupt ({bad.reason}); "
                          "restore the file from a copy or re-record those episodes")

    def _bad_chunks(self, name: str, arr, start: int, stop: int, limit: int | None = None) -> list[BadChunk]:
        """The chunks holding rows ``[start, stop)`` of ``arr`` that are truncated or do not decode
        (each decoded alone), at most ``limit`` of them."""
        bad: list[BadChunk] = []
        sized = _blosc_sized(arr)
        for coords in _chunk_coords(arr, start, stop):
            reason = self._header_problem(name, arr, coords) if sized else None
            if reason is None:
                try:
                    arr[tuple(slice(i * c, (i + 1) * c) for i, c in zip(coords, arr.chunks))]
                except MemoryError:
                    raise
                except Exception as exc:
                    reason = _describe(exc)
            if reason is not None:
                bad.append(self._bad_chunk(name, arr, coords, reason))
                if limit is not None and len(bad) >= limit:
                    break
        return bad

    def _bad_chunk(self, name: str, arr, coords: tuple[int, ...], reason: str) -> BadChunk:
        rows = arr.chunks[0]
        start, stop = coords[0] * rows, min((coords[0] + 1) * rows, arr.shape[0])
        episodes = None
        ends = getattr(self, "_ends", None)  # None while episode_ends itself is read
        if name.startswith("data/") and ends is not None and len(ends) and start < ends[-1]:
            first, last = np.searchsorted(ends, [start, stop - 1], side="right")
            episodes = (int(first), int(min(last, len(ends) - 1)))
        return BadChunk(name, f"{name}/{arr.metadata.encode_chunk_key(coords)}", start, stop, episodes, reason)

    def _header_problem(self, name: str, arr, coords: tuple[int, ...]) -> str | None:
        """Why the Blosc chunk at ``coords`` cannot be whole (see :func:`_blosc_problem`), or ``None``
        (also for an absent chunk, which reads as the fill value)."""
        head = self._chunk_head(f"{name}/{arr.metadata.encode_chunk_key(coords)}")
        if head is None:
            return None
        return _blosc_problem(*head, int(np.prod(arr.chunks)) * arr.dtype.itemsize)

    def _chunk_head(self, key: str) -> tuple[int, bytes] | None:
        """``(size in bytes, first 16 bytes)`` of the chunk file ``key`` (relative to the store), or
        ``None`` when it does not exist. Opens files read-only."""
        if _is_zip(self.path):
            if self._zip is None:
                self._zip = zipfile.ZipFile(self.path, "r")
            try:
                info = self._zip.getinfo(key)
            except KeyError:
                return None
            with self._zip.open(info) as f:
                return info.file_size, f.read(_BLOSC_HEADER.size)
        try:
            with open(self.path / key, "rb") as f:
                return os.fstat(f.fileno()).st_size, f.read(_BLOSC_HEADER.size)
        except FileNotFoundError:
            return None

    def _committed_arrays(self) -> list[tuple[str, Any, int]]:
        """``(name, array, committed rows)`` of every ``data/`` and ``meta/`` array, in key order."""
        arrays = [(f"data/{k}", a, self.n_steps) for k, a in self._data_arrays().items()]
        return arrays + [(f"meta/{k}", a, self.n_episodes) for k, a in sorted(self._group("meta").arrays())]

    def _check_tail_chunks(self) -> None:
        """Decode the partly filled last chunk of every array, which the next append rewrites, so that
        a corrupt one is refused before anything is written.

        Raises:
            StoreError: such a chunk does not decode (named with its steps and episodes).
        """
        for name, arr, n in self._committed_arrays():
            start = n - n % arr.chunks[0]
            if start < n:
                self._read(name, arr, start, n)

    def check(self, block_bytes: int = 64 << 20) -> tuple[int, list[BadChunk]]:
        """Decode every chunk that holds committed rows, of every ``data/`` and ``meta/`` array.

        Args:
            block_bytes: decoded bytes read at a time (chunks of a block are retried one by one
                when the block fails).

        Returns:
            ``(number of chunks checked, every bad chunk)``, in key order. Absent chunk files (read
            as the fill value) count as checked and good.
        """
        n_chunks, bad = 0, []
        for name, arr, n in self._committed_arrays():
            rows = arr.chunks[0]
            row_bytes = max(1, int(np.prod(arr.shape[1:], dtype=np.int64)) * arr.dtype.itemsize)
            block = rows * max(1, block_bytes // (rows * row_bytes))
            for s in range(0, n, block):
                e = min(n, s + block)
                n_chunks += sum(1 for _ in _chunk_coords(arr, s, e))
                try:
                    self._read(name, arr, s, e)
                except StoreError:
                    bad.extend(self._bad_chunks(name, arr, s, e))
        return n_chunks, bad

    # ------------------------------------------------------------------ reading
    @property
    def attrs(self) -> dict[str, Any]:
        """Root attributes (``fps``, ``robot``, ``action_space``, ``schema_version``, ...)."""
        return dict(self._root.attrs)

    @property
    def fps(self) -> float | None:
        """Control frequency in Hz, or ``None`` if the store does not say (e.g. Diffusion Policy's)."""
        return self._root.attrs.get("fps")

    @property
    def keys(self) -> list[str]:
        """Names of the ``data/<key>`` arrays, sorted."""
        return list(self._data_arrays())

    def _data_arrays(self) -> dict:
        if self._arrays is None:
            self._arrays = dict(sorted(self._group("data").arrays()))
        return self._arrays

    @property
    def episode_ends(self) -> np.ndarray:
        """``(n_episodes,)`` int64 cumulative end index of each committed episode."""
        return self._ends.copy()

    @property
    def n_episodes(self) -> int:
        """Number of committed episodes."""
        return len(self._ends)

    @property
    def n_steps(self) -> int:
        """Number of committed steps (over all episodes)."""
        return int(self._ends[-1]) if len(self._ends) else 0

    @property
    def episode_lengths(self) -> np.ndarray:
        """``(n_episodes,)`` int64 number of steps of each episode."""
        return np.diff(np.concatenate([[0], self._ends]))

    def key_info(self, key: str) -> KeyInfo:
        """Shape, dtype, units and description of ``data/<key>``.

        Raises:
            StoreError: no such key.
        """
        arr = self._array(key)
        return KeyInfo(
            shape=tuple(arr.shape[1:]),
            dtype=str(arr.dtype),
            units=arr.attrs.get("units"),
            description=arr.attrs.get("description"),
            codec=arr.attrs.get("codec"),
        )

    def _array(self, key: str):
        arrays = self._data_arrays()
        if key not in arrays:
            raise StoreError(f"{self.path}: missing key 'data/{key}' (have {self.keys})")
        return arrays[key]

    def get_episode(self, index: int, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """All steps of one committed episode.

        Args:
            index: episode index; negative counts from the end.
            keys: subset of keys (default all).

        Returns:
            ``{key: (T, *shape)}``.

        Raises:
            IndexError: no such episode.
            StoreError: no such key, or a chunk does not decode (named with its steps and episodes).
        """
        n = self.n_episodes
        if not -n <= index < n:
            raise IndexError(f"{self.path}: episode {index} out of range ({n} episodes)")
        index %= n
        start = 0 if index == 0 else int(self._ends[index - 1])
        end = int(self._ends[index])
        return {k: self._read(f"data/{k}", self._array(k), start, end) for k in (keys or self.keys)}

    def load(self, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Every committed step of the given keys, in memory: ``{key: (n_steps, *shape)}``.

        Raises:
            StoreError: no such key, or a chunk does not decode (named with its steps and episodes).
        """
        n = self.n_steps
        return {k: self._read(f"data/{k}", self._array(k), 0, n) for k in (keys or self.keys)}

    def episode_meta(self, name: str) -> np.ndarray:
        """Per-episode metadata ``meta/<name>``: ``(n_episodes,)``; for text metadata an object
        array of ``str`` (``""`` for episodes committed without it).

        Raises:
            StoreError: no such metadata, a chunk of it does not decode, or a text code outside its
                ``values``.
        """
        meta = self._group("meta")
        if name not in meta or name == "episode_ends":
            raise StoreError(f"{self.path}: missing key 'meta/{name}'")
        codes = self._read(f"meta/{name}", meta[name], 0, self.n_episodes)
        if not _is_text(meta[name]):
            return codes
        values = list(meta[name].attrs.get("values", []))
        bad = codes[(codes < -1) | (codes >= len(values))]
        if len(bad):
            raise StoreError(f"{self.path}: key 'meta/{name}': text code {int(bad[0])} is not in its "
                             f"{len(values)} values")
        out = np.empty(len(codes), dtype=object)
        out[:] = [values[c] if c >= 0 else "" for c in codes.tolist()]
        return out

    @property
    def text_meta_keys(self) -> list[str]:
        """Names of the per-episode text metadata arrays (a subset of :attr:`meta_keys`)."""
        meta = self._group("meta")
        return [k for k in self.meta_keys if _is_text(meta[k])]

    @property
    def meta_keys(self) -> list[str]:
        """Names of per-episode metadata arrays (without ``episode_ends``)."""
        return sorted(k for k in self._group("meta").array_keys() if k != "episode_ends")

    # ------------------------------------------------------------------ writing
    def _require_writable(self) -> None:
        if not self.writable:
            raise StoreError(f"{self.path}: store is open read-only (open with mode='a' to append)")

    def define_key(self, name: str, info: KeyInfo, chunk_steps: int | None = None) -> None:
        """Declare a ``data/<name>`` array before its first step.

        Args:
            name: key; ``/`` is not allowed.
            info: per-step shape, dtype, units, description; for an image key (see
                :func:`is_image_key`) ``info.codec`` picks the image codec (default
                :data:`DEFAULT_IMAGE_CODEC`).
            chunk_steps: time steps per chunk (default: about 1 MiB per chunk, at most 4096 steps;
                one frame for images).

        Raises:
            StoreError: the store is read-only, the key exists, episodes are already committed,
                or the codec is unknown.
        """
        self._require_writable()
        if "/" in name or not name:
            raise StoreError(f"{self.path}: invalid key name {name!r}")
        data = self._group("data")
        if name in data:
            raise StoreError(f"{self.path}: key 'data/{name}' already exists")
        if self.n_steps > 0:
            raise StoreError(f"{self.path}: cannot add key 'data/{name}' to a store with committed steps")
        dtype = np.dtype(info.dtype)
        fmt = self._root.metadata.zarr_format
        codec = None
        if info.is_image:
            codec = info.codec or DEFAULT_IMAGE_CODEC
            compressor = image_codec(codec)
            if fmt == 2:
                chunk_steps, kwargs = 1, {"compressors": compressor}
            else:  # imagecodecs' numcodecs classes are format-2 compressors
                codec, chunk_steps, kwargs = "blosc-zstd", 1, _compressor_kwargs(fmt, dtype)
        else:
            step_bytes = max(1, int(np.prod(info.shape, dtype=np.int64)) * dtype.itemsize)
            if chunk_steps is None:
                chunk_steps = int(min(4096, max(1, (1 << 20) // step_bytes)))
            kwargs = _compressor_kwargs(fmt, dtype)
        arr = data.create_array(
            name, shape=(0, *info.shape), chunks=(chunk_steps, *info.shape), dtype=dtype, fill_value=0, **kwargs,
        )
        arr.attrs.update(
            {"units": info.units, "description": info.description, "dtype": str(dtype),
             **({"codec": codec} if codec else {})}
        )
        self._arrays = None

    @property
    def episode_in_progress(self) -> int:
        """Steps added since the last commit or discard."""
        return self._flushed_in_episode + self._buffer_len

    def add_step(self, step: Mapping[str, Any]) -> None:
        """Append one step to the episode in progress (buffered; flushed in blocks).

        Args:
            step: ``{key: array of the key's per-step shape}``; every key of the store must be
                present. Keys are declared from the first step of an empty store.

        Raises:
            StoreError: read-only store, a missing or unknown key, or a shape that does not match.
        """
        self._require_writable()
        keys = self.keys
        if not keys and self.n_steps == 0:
            for k, v in step.items():
                v = np.asarray(v)
                dtype = np.float32 if v.dtype == np.float64 else v.dtype
                self.define_key(k, KeyInfo(shape=v.shape, dtype=str(np.dtype(dtype))))
            keys = self.keys
        missing = set(keys) - set(step)
        extra = set(step) - set(keys)
        if missing or extra:
            raise StoreError(
                f"{self.path}: step keys do not match the store: missing {sorted(missing)}, unknown {sorted(extra)}"
            )
        arrays = self._data_arrays()
        for k in keys:
            v = np.asarray(step[k])
            shape = arrays[k].shape[1:]
            if v.shape != shape:
                raise StoreError(f"{self.path}: key 'data/{k}' expects shape {shape}, got {v.shape}")
            self._buffer.setdefault(k, []).append(v)
        self._buffer_len += 1
        if self._buffer_len >= self.flush_every:
            self._flush()

    def _trim_uncommitted(self) -> None:
        """Cut rows and metadata past the commit point (left by a crash) before writing."""
        committed = self.n_steps
        for arr in self._data_arrays().values():
            if arr.shape[0] != committed:
                arr.resize((committed, *arr.shape[1:]))
        meta = self._group("meta")
        for name, arr in meta.arrays():
            if arr.shape[0] != self.n_episodes:
                arr.resize((self.n_episodes,))

    def _flush(self) -> None:
        if self._buffer_len == 0:
            return
        if self._flushed_in_episode == 0:
            self._trim_uncommitted()
        arrays = self._data_arrays()
        for k, rows in self._buffer.items():
            arr = arrays[k]
            arr.append(np.stack(rows).astype(arr.dtype, copy=False), axis=0)
        self._flushed_in_episode += self._buffer_len
        self._buffer = {}
        self._buffer_len = 0

    def commit_episode(self, meta: Mapping[str, Any] | None = None) -> int:
        """Make the episode in progress durable and visible.

        Args:
            meta: per-episode scalars (int, float or bool) or strings (text metadata, see the module
                docstring), stored under ``meta/<name>``.

        Returns:
            The index of the committed episode.

        Raises:
            StoreError: read-only store, empty episode, a metadata value that is neither a scalar nor
                a string, or a string for a numeric ``meta/<name>`` (or a number for a text one).
        """
        self._require_writable()
        if self.episode_in_progress == 0:
            raise StoreError(f"{self.path}: cannot commit an empty episode")
        meta = dict(meta or {})
        meta_group = self._group("meta")
        for name, value in meta.items():
            is_text = isinstance(value, str)
            if not is_text and (np.ndim(value) != 0 or np.asarray(value).dtype.kind not in "biuf"):
                raise StoreError(f"{self.path}: meta '{name}' must be a numeric or bool scalar or a string, "
                                 f"got {value!r}")
            if name == "episode_ends" or "/" in name:
                raise StoreError(f"{self.path}: invalid meta name {name!r}")
            if name in meta_group and _is_text(meta_group[name]) != is_text:
                kind = "text" if _is_text(meta_group[name]) else "numeric"
                raise StoreError(f"{self.path}: meta '{name}' is {kind}, got {value!r}")
        self._flush()
        fmt = self._root.metadata.zarr_format
        for name, value in meta.items():
            if isinstance(value, str):
                value = np.int32(self._text_code(meta_group, name, value, fmt))
            value = np.asarray(value)
            if name not in meta_group:
                meta_group.create_array(
                    name, shape=(self.n_episodes,), chunks=(4096,), dtype=value.dtype, fill_value=0,
                    **_compressor_kwargs(fmt, value.dtype),
                )
            arr = meta_group[name]
            arr.append(value.reshape(1).astype(arr.dtype), axis=0)
        for name, arr in meta_group.arrays():
            if name != "episode_ends" and name not in meta and arr.shape[0] == self.n_episodes:
                fill = -1 if _is_text(arr) else 0
                arr.append(np.full(1, fill, dtype=arr.dtype), axis=0)
        new_end = self.n_steps + self._flushed_in_episode
        meta_group["episode_ends"].append(np.array([new_end], dtype=np.int64), axis=0)  # commit point
        self._ends = np.append(self._ends, new_end)
        self._flushed_in_episode = 0
        return self.n_episodes - 1

    def _text_code(self, meta_group, name: str, value: str, fmt: int) -> int:
        """The code of string ``value`` in text metadata ``meta/<name>``, creating the array (with
        -1 for the episodes committed before) or adding the string to its ``values`` as needed."""
        if name not in meta_group:
            arr = meta_group.create_array(
                name, shape=(0,), chunks=(4096,), dtype="int32", fill_value=-1, **_compressor_kwargs(fmt, "int32"),
            )
            if self.n_episodes:
                arr.append(np.full(self.n_episodes, -1, dtype=np.int32), axis=0)
            arr.attrs.update({"text": True, "values": []})
        arr = meta_group[name]
        values = list(arr.attrs.get("values", []))
        if value not in values:
            values.append(value)
            arr.attrs["values"] = values  # before the commit point: a crash leaves an unused entry
        return values.index(value)

    def discard_episode(self) -> int:
        """Drop the episode in progress (buffered and flushed steps).

        Returns:
            The number of steps discarded.
        """
        self._require_writable()
        dropped = self.episode_in_progress
        self._buffer = {}
        self._buffer_len = 0
        if self._flushed_in_episode:
            self._trim_uncommitted()
        self._flushed_in_episode = 0
        return dropped

    def add_episode(self, episode: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None) -> int:
        """Append and commit a whole episode.

        Args:
            episode: ``{key: (T, *shape)}`` with the same ``T`` for every key.
            meta: per-episode scalars, as in :meth:`commit_episode`.

        Returns:
            The index of the committed episode.

        Raises:
            StoreError: an episode is already in progress, lengths differ, or as :meth:`add_step`.
        """
        self._require_writable()
        if self.episode_in_progress:
            raise StoreError(f"{self.path}: an episode is in progress; commit or discard it first")
        lengths = {k: len(v) for k, v in episode.items()}
        if len(set(lengths.values())) != 1:
            raise StoreError(f"{self.path}: episode arrays have different lengths {lengths}")
        T = next(iter(lengths.values()))
        for t in range(T):
            self.add_step({k: v[t] for k, v in episode.items()})
        return self.commit_episode(meta)

    def close(self) -> None:
        """Drop buffered steps of an uncommitted episode; committed episodes are already on disk."""
        self._buffer = {}
        self._buffer_len = 0
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def _key_stats(self, key: str, n: int) -> dict[str, Any]:
        """``min``, ``max`` (of the finite values) and, for float keys, ``nonfinite`` of the first
        ``n`` steps of ``data/<key>``, read one chunk at a time."""
        arr = self._array(key)
        is_float = arr.dtype.kind == "f"
        lo = hi = None
        nan = inf = 0
        episodes: set[int] = set()
        step = max(1, arr.chunks[0])
        for s in range(0, n, step):
            block = self._read(f"data/{key}", arr, s, min(n, s + step))
            finite = np.isfinite(block) if is_float else None
            if finite is None or finite.all():
                bmin, bmax = block.min(axis=0), block.max(axis=0)
            else:
                nan += int(np.isnan(block).sum())
                inf += int(np.isinf(block).sum())
                rows = s + np.flatnonzero(~finite.reshape(len(block), -1).all(axis=1))
                episodes.update(np.searchsorted(self._ends, rows, side="right").tolist())
                bmin = np.where(finite, block, np.inf).min(axis=0)
                bmax = np.where(finite, block, -np.inf).max(axis=0)
            lo = bmin if lo is None else np.minimum(lo, bmin)
            hi = bmax if hi is None else np.maximum(hi, bmax)
        out: dict[str, Any] = {"min": _finite_list(lo), "max": _finite_list(hi)}
        if is_float:
            out["nonfinite"] = {"count": nan + inf, "nan": nan, "inf": inf, "episodes": sorted(episodes)}
        return out

    def summary(self) -> dict[str, Any]:
        """JSON-able description: ``n_episodes``, ``n_steps``, ``fps``, and per key shape, dtype,
        units, min and max (over committed steps; of the finite values, ``None`` where there are
        none). Float keys also get ``nonfinite``: ``{"count", "nan", "inf", "episodes"}``, the NaN and
        Inf values and the sorted episodes holding them (training refuses such a store). Image keys
        (uint8) get their ``codec`` and are not read. ``text_meta`` maps each text metadata name to
        ``{string: number of episodes}``.

        Raises:
            StoreError: a chunk does not decode (named with its steps and episodes).
        """
        keys = {}
        n = self.n_steps
        for k in self.keys:
            info = self.key_info(k)
            entry: dict[str, Any] = {"shape": list(info.shape), "dtype": info.dtype, "units": info.units}
            if info.is_image:
                entry["codec"] = info.codec
            elif n:
                entry.update(self._key_stats(k, n))
            keys[k] = entry
        lengths = self.episode_lengths
        return {
            "path": str(self.path),
            "n_episodes": self.n_episodes,
            "n_steps": n,
            "fps": self.fps,
            "episode_length": {
                "min": int(lengths.min()) if len(lengths) else None,
                "mean": float(lengths.mean()) if len(lengths) else None,
                "max": int(lengths.max()) if len(lengths) else None,
            },
            "keys": keys,
            "meta_keys": self.meta_keys,
            "text_meta": {k: _count_strings(self.episode_meta(k)) for k in self.text_meta_keys},
            "attrs": {k: v for k, v in self.attrs.items()},
        }


def _is_text(arr) -> bool:
    """Whether the ``meta/<name>`` array ``arr`` holds text metadata (codes into ``attrs["values"]``)."""
    return bool(arr.attrs.get("text", False))


def _compressor_kwargs(zarr_format: int, dtype) -> dict:
    """Blosc-zstd with byte shuffle for numeric arrays, in the form each zarr format expects."""
    from numcodecs import Blosc

    itemsize = np.dtype(dtype).itemsize
    if zarr_format == 2:
        return {"compressors": Blosc(cname="zstd", clevel=3, shuffle=Blosc.SHUFFLE if itemsize > 1 else Blosc.NOSHUFFLE)}
    from zarr.codecs import BloscCodec

    return {"compressors": BloscCodec(cname="zstd", clevel=3, shuffle="shuffle" if itemsize > 1 else "noshuffle")}


#: Blosc 1 frame header: version, versionlz, flags, typesize, nbytes (decoded), blocksize, cbytes (frame).
_BLOSC_HEADER = struct.Struct("<4B3I")


def _blosc_sized(arr) -> bool:
    """Whether every chunk file of ``arr`` is one Blosc frame of a whole chunk, so its header can be
    checked against the file size (no filters, Blosc the only compressor)."""
    from numcodecs import Blosc
    from zarr.codecs import BloscCodec

    compressors = arr.compressors
    return not arr.filters and len(compressors) == 1 and isinstance(compressors[0], (Blosc, BloscCodec))


def _blosc_problem(size: int, head: bytes, nbytes: int) -> str | None:
    """Why a Blosc chunk file of ``size`` bytes starting with ``head`` is not a whole frame of
    ``nbytes`` decoded bytes, or ``None``. Blosc stores small or incompressible chunks verbatim and
    decodes a truncated one of those from past its end without an error, so decoding alone misses it."""
    if size < _BLOSC_HEADER.size:
        return f"{size} bytes, shorter than a Blosc header: truncated"
    *_, decoded, _, frame = _BLOSC_HEADER.unpack(head)
    if frame != size:
        return f"Blosc header says {frame} bytes, the file has {size}: truncated or overwritten"
    if decoded != nbytes:
        return f"Blosc header says {decoded} bytes decoded, a chunk holds {nbytes}: overwritten"
    return None


def _chunk_coords(arr, start: int, stop: int) -> Iterable[tuple[int, ...]]:
    """Grid coordinates of the chunks holding rows ``[start, stop)`` of ``arr`` (every chunk along
    the other axes)."""
    rows = arr.chunks[0]
    ranges = [range(start // rows, -(-stop // rows))]
    ranges += [range(-(-n // c)) for n, c in zip(arr.shape[1:], arr.chunks[1:])]
    return itertools.product(*ranges)


def _count_strings(values: np.ndarray) -> dict[str, int]:
    """``{string: number of episodes}`` of a text metadata array, most frequent first."""
    uniq, counts = np.unique(values.astype(str), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return {str(uniq[i]): int(counts[i]) for i in order}


def _finite_list(x: np.ndarray) -> list:
    """``x`` rounded to 6 decimals as nested lists, with ``None`` for non-finite entries."""
    x = np.asarray(x, dtype=np.float64)
    out = np.asarray(np.round(x, 6), dtype=object)
    out[~np.isfinite(x)] = None
    return out.tolist()


def _describe(exc: BaseException) -> str:
    """``"Type: message"`` of a codec's exception, on one line."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
