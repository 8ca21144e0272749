"""``robolearn export CHECKPOINT --format onnx``: a self-contained model of a trained policy for edge computers.

Composes :mod:`robolearn.policies.export` (the ONNX graph: normalizer, encoder, DDIM loop (or a distilled
consistency policy's steps) unrolled with the noise an input, or ACT's forward; its JSON sidecar) and checks the written file against
eager torch on one seeded example (ONNX Runtime, when it is installed).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

FORMATS = ("onnx",)


def export_checkpoint(checkpoint: str | Path, fmt: str = "onnx", out: str | Path | None = None,
                      num_inference_steps: int | None = None, batch: int = 1, use_ema: bool = True,
                      seed: int = 0) -> dict[str, Any]:
    """Export ``checkpoint``'s policy to ``out`` (default ``<run>/export/policy_<K>steps.onnx`` for a
    diffusion or consistency policy, ``<run>/export/policy.onnx`` for ACT) with its sidecar (same path, ``.json``).

    Args:
        checkpoint: checkpoint or run directory.
        fmt: export format; only ``"onnx"``.
        num_inference_steps: DDIM (or consistency) steps unrolled in the graph (default: the checkpoint's).
        batch: the graph's fixed batch size (1: the latency case).
        use_ema: the EMA weights (else the raw ones).
        seed: seed of the parity example (random raw observations, standard normal low-dim keys
            and uniform uint8 images, and the noise).

    Returns:
        ``{"model", "sidecar"}`` (paths), ``"policy_type"``, ``"num_inference_steps"``, ``"batch"``,
        ``"export_s"`` (seconds), ``"max_abs_diff"`` (ONNX Runtime vs eager torch on the example,
        raw action units; ``None`` without onnxruntime) and ``"parity_note"``.

    Raises:
        ValueError: an unsupported ``fmt`` or ``batch < 1`` (checked before the checkpoint is read),
            a policy that is not exportable, or ``num_inference_steps < 1``.
        CheckpointError: an unreadable checkpoint.
        RobolearnError: ``onnx`` (or ``onnxscript``) not installed.
    """
    from robolearn.apps.eval import run_dir_of
    from robolearn.eval.rollout import set_inference_steps
    from robolearn.policies.export import export_onnx, policy_kind
    from robolearn.train.checkpoint import load_policy

    if fmt not in FORMATS:
        raise ValueError(f"unsupported export format {fmt!r}; supported: {', '.join(FORMATS)}")
    if batch < 1:
        raise ValueError(f"--batch must be >= 1, got {batch}")
    policy, _ = load_policy(checkpoint, use_ema=use_ema)
    kind = policy_kind(policy)
    set_inference_steps(policy, num_inference_steps)
    steps = int(policy.num_inference_steps) if kind != "act" else None
    if out is None:
        out = run_dir_of(checkpoint) / "export" / (f"policy_{steps}steps.onnx" if steps else "policy.onnx")
    t0 = time.monotonic()
    try:
        model, side = export_onnx(policy, out, num_inference_steps=steps, batch=batch)
    except ImportError as exc:
        from robolearn.utils.errors import RobolearnError

        raise RobolearnError(f"ONNX export needs {exc.name or 'onnx'}: pip install 'robolearn[onnx]'") from None
    result = {"model": str(model), "sidecar": str(side), "policy_type": kind, "num_inference_steps": steps,
              "batch": batch, "export_s": round(time.monotonic() - t0, 2)}
    result.update(parity(policy, model, batch, seed))
    return result


def parity(policy, model: str | Path, batch: int = 1, seed: int = 0) -> dict[str, Any]:
    """Max absolute difference (raw action units) between the ONNX file run by ONNX Runtime and
    eager torch's ``predict_action_chunk`` on one seeded random example with the same noise.

    Returns:
        ``{"max_abs_diff": float | None, "parity_note": str}`` (``None`` without onnxruntime).
    """
    import torch

    from robolearn.policies.export import draw_noise, random_obs

    try:
        import onnxruntime as ort
    except ImportError:
        return {"max_abs_diff": None, "parity_note": "onnxruntime not installed: parity not checked"}
    obs = random_obs(policy, batch, seed)
    feeds = {f"obs.{k}": v.numpy() for k, v in obs.items()}
    kwargs = {}
    noise = draw_noise(policy, batch, torch.Generator().manual_seed(seed + 1))
    if noise is not None:
        feeds["noise"] = noise.numpy()
        kwargs = {"generator": torch.Generator().manual_seed(seed + 1)}  # eager draws the same noise from it
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    (onnx_out,) = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"]).run(None, feeds)
    eager = policy.predict_action_chunk(obs, **kwargs).numpy()
    return {"max_abs_diff": float(abs(onnx_out - eager).max()),
            "parity_note": f"ONNX Runtime vs eager torch, seeded random example (seed {seed}), same noise"}
