import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from robolearn.data.normalizer import compute_stats
from robolearn.policies import build_policy
from robolearn.train.checkpoint import (has_checkpoint, load_policy, load_train_state, pack_state, save_checkpoint,
                                        unpack_state)
from robolearn.utils.errors import CheckpointError

SMALL = dict(name="diffusion", horizon=8, n_obs_steps=2, n_action_steps=4, down_dims=[16, 32], kernel_size=3,
             n_groups=4, step_embed_dim=16, num_train_timesteps=20, num_inference_steps=3,
             beta_schedule="squaredcos_cap_v2")


def make_policy(seed=0):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    stats = compute_stats({"x": rng.normal(size=(50, 3)), "action": rng.normal(size=(50, 2)) * 5})
    return build_policy(SMALL, {"x": (3,)}, 2, stats=stats)


def test_pack_unpack_optimizer_state_roundtrip():
    p = make_policy()
    opt = torch.optim.AdamW(p.parameters(), lr=1e-3)
    p.compute_loss({"obs.x": torch.randn(4, 2, 3), "action": torch.randn(4, 8, 2)})[0].backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "step": 7, "rng": np.random.default_rng(1).bit_generator.state,
             "nested": (1, [2.5, None, "s"])}
    tensors, skeleton = pack_state(state)
    back = unpack_state(tensors, json.loads(json.dumps(skeleton)))
    assert back["step"] == 7 and back["nested"] == (1, [2.5, None, "s"]) and back["rng"] == state["rng"]
    assert set(back["optimizer"]["state"]) == set(state["optimizer"]["state"])  # int keys survive JSON
    k = next(iter(state["optimizer"]["state"]))
    assert torch.equal(back["optimizer"]["state"][k]["exp_avg"], state["optimizer"]["state"][k]["exp_avg"])
    opt2 = torch.optim.AdamW(p.parameters(), lr=1e-3)
    opt2.load_state_dict(back["optimizer"])
    with pytest.raises(TypeError, match="object"):
        pack_state({"bad": object()})


def test_save_load_gives_identical_predictions_and_no_pickle(tmp_path):
    p = make_policy().eval()
    ema = make_policy(seed=1).eval()
    cfg = OmegaConf.create({"policy": SMALL, "task": {"name": "toy"}})
    ck = save_checkpoint(tmp_path / "ck", p, cfg, "diffusion", ema_policy=ema, train_state={"step": 3})
    assert sorted(f.name for f in ck.iterdir()) == sorted(
        ["model.safetensors", "ema.safetensors", "policy.json", "config.yaml", "train_state.safetensors",
         "train_state.json"])
    obs = {"x": torch.randn(2, 2, 3)}
    for use_ema, ref in ((True, ema), (False, p)):
        loaded, lcfg = load_policy(ck, use_ema=use_ema)
        a = loaded.predict_action(obs, generator=torch.Generator().manual_seed(0))
        b = ref.predict_action(obs, generator=torch.Generator().manual_seed(0))
        assert torch.equal(a, b)
        # normalizer statistics travel inside the weights
        assert torch.equal(loaded.normalizer.scale__action, ref.normalizer.scale__action)
    assert lcfg.task.name == "toy" and load_train_state(ck)["step"] == 3
    assert has_checkpoint(ck)


def test_interrupted_swap_falls_back_to_previous(tmp_path):
    p = make_policy()
    cfg = OmegaConf.create({"policy": SMALL})
    ck = save_checkpoint(tmp_path / "ck", p, cfg, "diffusion")
    ck.rename(tmp_path / "ck.old")  # killed between the two renames
    assert has_checkpoint(tmp_path / "ck")
    loaded, _ = load_policy(tmp_path / "ck")
    assert loaded.horizon == 8


def test_bad_checkpoints_raise_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_policy(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="missing policy.json"):
        load_policy(tmp_path / "empty")
    p = make_policy()
    ck = save_checkpoint(tmp_path / "ck", p, OmegaConf.create({}), "diffusion")
    meta = json.loads((ck / "policy.json").read_text())
    meta["kwargs"]["down_dims"] = [8, 16]
    (ck / "policy.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_policy(ck)


class _Killed(BaseException):
    """Stands for SIGKILL: raised by an instrumented filesystem call, caught by nobody."""


@pytest.mark.parametrize("start", ["latest", "between_renames"])
def test_a_kill_at_any_filesystem_step_of_a_save_keeps_a_complete_checkpoint(tmp_path, monkeypatch, start):
    """Kill ``save_checkpoint`` before each rename/delete it makes: a complete checkpoint (the old or the
    new one) is always readable, including when the save starts from a run killed between the two
    renames of the previous swap (then ``.old`` is the only copy and must not be deleted first)."""
    import os
    import shutil

    import robolearn.train.checkpoint as ckmod

    cfg = OmegaConf.create({"policy": SMALL})
    n_ops = None
    k = 0
    while n_ops is None or k <= n_ops:
        root = tmp_path / f"k{k}"
        ck = save_checkpoint(root / "latest", make_policy(seed=0), cfg, "diffusion", train_state={"step": 1})
        if start == "between_renames":
            shutil.copytree(ck, root / "latest.tmp")
            ck.rename(root / "latest.old")
        calls = []

        def killing(fn):
            def wrapped(*args, **kwargs):
                calls.append(fn.__name__)
                if len(calls) > k:
                    raise _Killed
                return fn(*args, **kwargs)
            return wrapped

        monkeypatch.setattr(ckmod.os, "replace", killing(os.replace))
        monkeypatch.setattr(ckmod.shutil, "rmtree", killing(shutil.rmtree))
        try:
            save_checkpoint(root / "latest", make_policy(seed=1), cfg, "diffusion", train_state={"step": 2})
            n_ops = len(calls)
        except _Killed:
            pass
        monkeypatch.undo()
        assert has_checkpoint(root / "latest"), f"no checkpoint after a kill at step {k} ({calls})"
        assert load_train_state(root / "latest")["step"] in (1, 2)
        load_policy(root / "latest")
        k += 1
    assert n_ops >= 3  # the instrumented calls did run: rmtree old, replace x2 ...
