"""Faster batch-1 inference behind the same ``predict_action``: a policy run by ONNX Runtime.

:func:`accelerate` wraps a loaded diffusion or ACT policy. ``backend="onnxruntime"`` exports the
policy's chunk prediction to ONNX in memory (:mod:`robolearn.policies.export`: normalizer, encoder
and the DDIM loop unrolled, the initial noise an input) and runs it in an ONNX Runtime session
with ``threads`` intra-op threads. The noise is drawn with torch exactly as the eager policy draws it
(``torch.randn((B, horizon, action_dim), generator=generator)``), so for the same generator state the
actions equal eager mode's up to float rounding (tested: ``tests/test_export.py``, 1e-4 absolute
in normalized [-1, 1] units times the action range). ``backend="eager"`` returns the policy itself.
Where ``onnxruntime`` (or ``onnx``) is not installed, :func:`accelerate` warns once (one line) and
returns the eager policy. The batch size is fixed per session; a new one re-exports (once per size).
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import torch

BACKENDS = ("eager", "onnxruntime")


class OnnxRuntimePolicy:
    """``policy``'s ``predict_action_chunk`` / ``predict_action`` run by ONNX Runtime.

    Attributes not defined here (``obs_shapes``, ``n_obs_steps``, ``horizon``, ``action_dim``,
    ``n_action_steps``, ``num_inference_steps`` ...) are the wrapped policy's; changing the policy's
    ``num_inference_steps`` re-exports on the next call.

    Args:
        policy: a diffusion or ACT policy (eval mode).
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
        self._sessions: dict[tuple[int, int | None], Any] = {}
        self.backend = "onnxruntime"

    def __getattr__(self, name: str):
        return getattr(self.__dict__["policy"], name)

    def _session(self, batch: int):
        import onnxruntime as ort

        from robolearn.policies.export import onnx_bytes

        steps = getattr(self.policy, "num_inference_steps", None) if self.kind == "diffusion" else None
        key = (batch, steps)
        if key not in self._sessions:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            self._sessions[key] = ort.InferenceSession(onnx_bytes(self.policy, steps, batch), opts,
                                                       providers=["CPUExecutionProvider"])
        return self._sessions[key]

    def predict_action_chunk(self, obs: Mapping[str, torch.Tensor],
                             generator: torch.Generator | None = None) -> torch.Tensor:
        """As the policy's: ``obs = {key: (B, n_obs_steps, *shape)}`` raw -> ``(B, chunk_length, A)`` raw."""
        from robolearn.policies.vision import is_image_shape

        p = self.policy
        feeds = {}
        batch = None
        for k, shape in p.obs_shapes.items():
            if k not in obs:
                raise KeyError(f"observation key '{k}' missing (got {sorted(obs)})")
            x = torch.as_tensor(obs[k])[:, : p.n_obs_steps]
            if x.shape[1] != p.n_obs_steps:
                raise ValueError(f"obs '{k}' has {x.shape[1]} steps, policy needs n_obs_steps={p.n_obs_steps}")
            x = x.to(torch.uint8) if is_image_shape(shape) else x.float()
            feeds[f"obs.{k}"] = x.contiguous().numpy()
            batch = x.shape[0]
        if self.kind == "diffusion":
            feeds["noise"] = torch.randn((batch, p.horizon, p.action_dim), generator=generator).numpy()
        return torch.from_numpy(self._session(batch).run(None, feeds)[0])

    def predict_action(self, obs: Mapping[str, torch.Tensor], **kwargs: Any) -> torch.Tensor:
        """The first ``n_action_steps`` of :meth:`predict_action_chunk`; ACT with temporal
        ensembling runs eager (its per-step average lives in the policy)."""
        if self.kind == "act" and self.policy.temporal_ensemble_k is not None:
            return self.policy.predict_action(obs)
        return self.predict_action_chunk(obs, **kwargs)[:, : self.policy.n_action_steps]

    def reset(self) -> None:
        self.policy.reset()


def accelerate(policy, backend: str = "onnxruntime", threads: int | None = None):
    """``policy`` on ``backend`` (see the module docstring); the eager policy, with one warning
    line, where the backend's package is missing.

    Raises:
        ValueError: unknown backend, or a policy the backend cannot run.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown inference backend {backend!r}; known: {list(BACKENDS)}")
    if backend == "eager":
        return policy
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        warnings.warn(f"backend onnxruntime unavailable ({exc.name} not installed: pip install 'robolearn[onnx]'); "
                      "running eager torch", RuntimeWarning, stacklevel=2)
        return policy
    return OnnxRuntimePolicy(policy, threads)
