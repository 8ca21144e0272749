"""Faster batch-1 inference behind the same ``predict_action``: a policy run by ONNX Runtime or torch.compile.

:func:`accelerate` wraps a loaded diffusion, consistency (distilled) or ACT policy. ``backend="onnxruntime"`` exports the
policy's chunk prediction to ONNX in memory (:mod:`robolearn.policies.export`: normalizer, encoder
and the DDIM loop or consistency steps unrolled, the noise an input) and runs it in an ONNX Runtime session
with ``threads`` intra-op threads. The noise is drawn with torch exactly as the eager policy draws it
(``torch.randn((B, horizon, action_dim), generator=generator)``), so for the same generator state the
actions equal eager mode's up to float rounding (tested: ``tests/test_export.py``, 1e-4 absolute
in normalized [-1, 1] units times the action range). ``backend="eager"`` returns the policy itself.
Where ``onnxruntime`` (or ``onnx``) is not installed, :func:`accelerate` warns once (one line) and
returns the eager policy. The batch size is fixed per session; a new one re-exports (once per size).

``backend="compile"`` runs the same DDIM (or consistency) loop in Python with the U-Net compiled by ``torch.compile``
(inductor's C++ kernels on a CPU; one graph serves every step, the timestep being an input), and
ACT's whole forward compiled; the noise is drawn as above, so actions equal eager mode's within the
same tolerance (tested: ``tests/test_fast.py``). Compiling takes seconds to minutes (measured 7 s for
the state U-Net on our loaded 2-core CPU) and happens in :func:`accelerate` (a warm-up call); a
second batch size recompiles once, with a dynamic batch axis. Where compiling fails (no C++ compiler, an unsupported op),
:func:`accelerate` warns (one line) and returns the eager policy. Threads: torch's
(``torch.set_num_threads``), as eager mode.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import torch

BACKENDS = ("eager", "onnxruntime", "compile")


def _graph_inputs(policy, obs: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
    """``obs`` as the exported graph's inputs (:func:`robolearn.policies.export.input_names`, without
    the noise): one ``(B, n_obs_steps, *shape)`` tensor per key, uint8 for images, float32 else.

    Raises:
        KeyError: a key of ``policy.obs_shapes`` missing from ``obs``.
        ValueError: fewer than ``n_obs_steps`` steps.
    """
    from robolearn.policies.vision import is_image_shape

    out = []
    for k, shape in policy.obs_shapes.items():
        if k not in obs:
            raise KeyError(f"observation key '{k}' missing (got {sorted(obs)})")
        x = torch.as_tensor(obs[k])[:, : policy.n_obs_steps]
        if x.shape[1] != policy.n_obs_steps:
            raise ValueError(f"obs '{k}' has {x.shape[1]} steps, policy needs n_obs_steps={policy.n_obs_steps}")
        out.append((x.to(torch.uint8) if is_image_shape(shape) else x.float()).contiguous())
    return out


class _Accelerated:
    """What both backends share: the wrapped policy's attributes, ``predict_action`` and ``reset``."""

    policy: Any
    kind: str

    def __getattr__(self, name: str):
        return getattr(self.__dict__["policy"], name)

    def predict_action_chunk(self, obs, generator=None) -> torch.Tensor:  # pragma: no cover (abstract)
        raise NotImplementedError

    def predict_action(self, obs: Mapping[str, torch.Tensor], **kwargs: Any) -> torch.Tensor:
        """The first ``n_action_steps`` of :meth:`predict_action_chunk`; ACT with temporal
        ensembling runs eager (its per-step average lives in the policy)."""
        if self.kind == "act" and self.policy.temporal_ensemble_k is not None:
            return self.policy.predict_action(obs)
        return self.predict_action_chunk(obs, **kwargs)[:, : self.policy.n_action_steps]

    def reset(self) -> None:
        """The policy's ``reset`` (clears ACT's ensembling history)."""
        self.policy.reset()


class OnnxRuntimePolicy(_Accelerated):
    """``policy``'s ``predict_action_chunk`` / ``predict_action`` run by ONNX Runtime.

    Attributes not defined here (``obs_shapes``, ``n_obs_steps``, ``horizon``, ``action_dim``,
    ``n_action_steps``, ``num_inference_steps`` ...) are the wrapped policy's; changing the policy's
    ``num_inference_steps`` re-exports on the next call, changing ``threads`` opens a new session
    on the model already exported.

    Args:
        policy: a diffusion, consistency or ACT policy (eval mode).
        threads: ONNX Runtime intra-op threads (default: ``torch.get_num_threads()``).

    Raises:
        ImportError: onnxruntime or onnx missing.
        ValueError: a policy that cannot be exported (see :func:`robolearn.policies.export.policy_kind`).
    """

    def __init__(self, policy, threads: int | None = None):
        import onnxruntime  # noqa: F401  (fail here, not at the first call)

        from robolearn.policies.export import policy_kind

        self.kind = policy_kind(policy)
        self.policy = policy.eval()
        self.threads = int(threads or torch.get_num_threads())
        self._models: dict[tuple[int, int | None], bytes] = {}
        self._sessions: dict[tuple[int, int | None, int], Any] = {}
        self.backend = "onnxruntime"

    def _session(self, batch: int):
        import onnxruntime as ort

        from robolearn.policies.export import SAMPLED, onnx_bytes

        steps = getattr(self.policy, "num_inference_steps", None) if self.kind in SAMPLED else None
        key = (batch, steps, self.threads)
        if key not in self._sessions:
            if key[:2] not in self._models:  # one export per batch size and step count
                self._models[key[:2]] = onnx_bytes(self.policy, steps, batch)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            self._sessions[key] = ort.InferenceSession(self._models[key[:2]], opts, providers=["CPUExecutionProvider"])
        return self._sessions[key]

    def predict_action_chunk(self, obs: Mapping[str, torch.Tensor],
                             generator: torch.Generator | None = None) -> torch.Tensor:
        """As the policy's: ``obs = {key: (B, n_obs_steps, *shape)}`` raw -> ``(B, chunk_length, A)`` raw."""
        from robolearn.policies.export import draw_noise

        p = self.policy
        inputs = _graph_inputs(p, obs)
        feeds = {f"obs.{k}": x.numpy() for k, x in zip(p.obs_shapes, inputs)}
        batch = inputs[0].shape[0]
        noise = draw_noise(p, batch, generator)
        if noise is not None:
            feeds["noise"] = noise.numpy()
        return torch.from_numpy(self._session(batch).run(None, feeds)[0])


class CompiledPolicy(_Accelerated):
    """``policy``'s ``predict_action_chunk`` / ``predict_action`` with its network compiled by ``torch.compile``.

    A diffusion or consistency policy keeps its sampling loop in Python
    (:func:`~robolearn.policies.export.sampler`, the same per-step arithmetic as the ONNX graph) around the compiled U-Net; an ACT policy's whole
    chunk forward (:class:`~robolearn.policies.export.ACTForward`) is compiled. Shapes are static
    at first; a second batch size recompiles once with a dynamic batch axis (torch's default). Attributes not defined here are the wrapped policy's; changing
    its ``num_inference_steps`` takes effect on the next call.

    Args:
        policy: a diffusion, consistency or ACT policy (eval mode).
        mode: ``torch.compile``'s ``mode`` (default: inductor's default).

    Raises:
        ValueError: a policy that cannot be compiled this way (see :func:`robolearn.policies.export.policy_kind`).
    """

    def __init__(self, policy, mode: str | None = None):
        from robolearn.policies.export import ACTForward, policy_kind

        self.kind = policy_kind(policy)
        self.policy = policy.eval()
        self.backend = "compile"
        net = ACTForward(policy).eval() if self.kind == "act" else policy.model
        self._net = torch.compile(net, mode=mode)
        self._samplers: dict[int, Any] = {}

    def predict_action_chunk(self, obs: Mapping[str, torch.Tensor],
                             generator: torch.Generator | None = None) -> torch.Tensor:
        """As the policy's: ``obs = {key: (B, n_obs_steps, *shape)}`` raw -> ``(B, chunk_length, A)`` raw."""
        from robolearn.policies.export import draw_noise, sampler

        p = self.policy
        inputs = _graph_inputs(p, obs)
        with torch.no_grad():
            if self.kind == "act":
                return self._net(*inputs)
            steps = int(p.num_inference_steps)
            if steps not in self._samplers:
                self._samplers[steps] = sampler(p, steps, denoiser=self._net)
            return self._samplers[steps](*inputs, draw_noise(p, inputs[0].shape[0], generator))


def check_backend(backend: str, policy=None) -> None:
    """Check, without exporting or compiling, that ``backend`` is known and can run ``policy`` (when given).

    Raises:
        ValueError: unknown backend, or a non-eager backend for a policy that is not diffusion,
            consistency or ACT (e.g. a residual-RL policy).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown inference backend {backend!r}; known: {list(BACKENDS)}")
    if backend != "eager" and policy is not None:
        from robolearn.policies.export import policy_kind

        policy_kind(policy)


def accelerate(policy, backend: str = "onnxruntime", threads: int | None = None):
    """``policy`` on ``backend`` (see the module docstring); the eager policy, with one warning
    line, where the backend's package is missing (onnxruntime) or compiling fails (compile).

    Args:
        policy: a loaded diffusion, consistency or ACT policy (eval mode).
        backend: one of :data:`BACKENDS`.
        threads: ONNX Runtime's intra-op threads (default ``torch.get_num_threads()``); the torch
            backends use torch's own setting.

    Raises:
        ValueError: unknown backend, or a policy the backend cannot run (:func:`check_backend`).
    """
    check_backend(backend, policy)
    if backend == "eager":
        return policy
    if backend == "compile":
        return _compiled_or_eager(policy)
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        warnings.warn(f"backend onnxruntime unavailable ({exc.name} not installed: pip install 'robolearn[onnx]'); "
                      "running eager torch", RuntimeWarning, stacklevel=2)
        return policy
    return OnnxRuntimePolicy(policy, threads)


def _compiled_or_eager(policy):
    """:class:`CompiledPolicy` of ``policy``, compiled now by one warm-up call on the example
    inputs; the eager policy with one warning line where compiling fails."""
    from robolearn.policies.export import example_inputs

    fast = CompiledPolicy(policy)
    obs = dict(zip(policy.obs_shapes, example_inputs(policy, 1)))
    try:
        fast.predict_action_chunk(obs, generator=torch.Generator().manual_seed(0))
    except Exception as exc:  # noqa: BLE001  (inductor raises many types: no compiler, unsupported op ...)
        warnings.warn(f"backend compile unavailable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                      "running eager torch", RuntimeWarning, stacklevel=3)
        return policy
    return fast
