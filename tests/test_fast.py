"""The torch.compile backend gives eager torch's actions (same noise); backends fall back cleanly;
``robolearn eval``/``deploy`` take ``--backend``."""

import warnings

import numpy as np
import pytest
import torch

from robolearn.policies.fast import BACKENDS, CompiledPolicy, accelerate
from test_export import ATOL, random_obs, tiny_act, tiny_consistency, tiny_diffusion


@pytest.mark.parametrize("make", [tiny_diffusion, tiny_consistency, tiny_act], ids=["diffusion", "consistency", "act"])
def test_compile_matches_eager(make):
    policy = make()
    fast = accelerate(policy, "compile")
    assert isinstance(fast, CompiledPolicy)
    obs = random_obs(policy)
    kw = lambda: {"generator": torch.Generator().manual_seed(5)} if fast.kind != "act" else {}  # noqa: E731
    a = fast.predict_action(obs, **kw())
    b = policy.predict_action(obs, **kw())
    assert a.shape == b.shape == (1, policy.n_action_steps, 2)
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=ATOL, rtol=0)
    # another step count (the same compiled U-Net) on a batch of two (recompiled once, dynamic batch axis)
    if fast.kind != "diffusion":
        return
    obs2 = {k: torch.cat([v, random_obs(policy, seed=2)[k]]) for k, v in obs.items()}
    policy.num_inference_steps = 1
    np.testing.assert_allclose(fast.predict_action(obs2, **kw()).numpy(), policy.predict_action(obs2, **kw()).numpy(),
                               atol=ATOL, rtol=0)


def test_compile_falls_back_with_one_warning_when_compiling_fails(monkeypatch):
    policy = tiny_act()

    def broken(*args, **kwargs):
        def fail(*a, **k):
            raise RuntimeError("no C++ compiler found\nsecond line")
        return fail

    monkeypatch.setattr(torch, "compile", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert accelerate(policy, "compile") is policy
    assert len(caught) == 1
    msg = str(caught[0].message)
    assert "backend compile unavailable" in msg and "no C++ compiler" in msg and "\n" not in msg
    assert accelerate(policy, "eager") is policy
    assert set(BACKENDS) == {"eager", "onnxruntime", "compile"}
