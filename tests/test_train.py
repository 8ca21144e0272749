import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from robolearn.data.store import EpisodeStore
from robolearn.train.checkpoint import load_policy
from robolearn.train.trainer import train
from robolearn.utils.config import load_config
from robolearn.utils.errors import ConfigError, StoreError

TINY = ["policy.down_dims=[16,32]", "policy.horizon=8", "policy.n_action_steps=4", "policy.kernel_size=3",
        "policy.n_groups=4", "policy.step_embed_dim=16", "policy.num_train_timesteps=20",
        "policy.num_inference_steps=3", "task.obs_keys=[obs]", "train.batch_size=16", "train.warmup_steps=2",
        "train.log_every=5", "train.val_every=10", "train.num_threads=1", "data.val_ratio=0.2"]


def toy_store(path: Path, n_episodes=6, T=12):
    rng = np.random.default_rng(0)
    store = EpisodeStore.create(path, fps=10)
    for e in range(n_episodes):
        goal = rng.uniform(-1, 1, 2).astype(np.float32)
        pos = np.zeros(2, np.float32)
        for _ in range(T):
            action = np.clip(goal - pos, -0.2, 0.2).astype(np.float32)
            store.add_step({"obs": np.concatenate([pos, goal]), "action": action})
            pos = pos + action
        store.commit_episode({"seed": e})
    return path


def overrides(tmp_path, steps, ckpt_every=10, run="run"):
    return [*TINY, f"data.path={tmp_path / 'toy.zarr'}", f"run_dir={tmp_path / run}", f"train.steps={steps}",
            f"train.ckpt_every={ckpt_every}"]


def test_train_writes_checkpoint_logs_and_summary(tmp_path):
    toy_store(tmp_path / "toy.zarr")
    cfg = load_config(overrides(tmp_path, 20))
    ckpt = train(cfg, progress=False)
    run = tmp_path / "run"
    assert ckpt == run / "checkpoints" / "latest"
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["steps"] == 20 and summary["resumed_from"] == 0 and summary["n_val_episodes"] == 1
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [5, 10, 15, 20]
    assert all(r["mse"] == r["loss"] for r in rows if "loss" in r)  # the policy's loss terms (diffusion: one)
    assert [r["step"] for r in rows if "val_loss" in r] == [10, 20]
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tensorboard").iterdir())
    policy, saved_cfg = load_policy(run)
    assert saved_cfg.train.steps == 20
    a = policy.predict_action({"obs": torch.zeros(1, 2, 4)})
    assert a.shape == (1, 4, 2) and torch.isfinite(a).all()


def test_loss_terms_are_averaged_over_ranks_on_log_steps_only(tmp_path, monkeypatch):
    """One sync point per log step (DDP's second per-step all_reduce is gone), and the summary's
    loss EMA is still the EMA of every step's loss, not of the logged steps' losses only."""
    from robolearn.train import distributed

    toy_store(tmp_path / "toy.zarr")
    means, real_mean = [], distributed.DistContext.mean
    monkeypatch.setattr(distributed.DistContext, "mean", lambda self, v: means.append(v.clone()) or real_mean(self, v))
    cfg = load_config([*overrides(tmp_path, 12), "train.log_every=1"])
    train(cfg, progress=False)
    every_step = [json.loads(l)["loss"] for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
                  if "loss" in json.loads(l)]
    ema = every_step[0]
    for v in every_step[1:]:
        ema = 0.95 * ema + 0.05 * v
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert len(every_step) == 12 and summary["final_loss_ema"] == pytest.approx(ema, rel=1e-5)

    means.clear()
    cfg = load_config([*overrides(tmp_path, 12, run="run5")])  # log_every=5: steps 5, 10 and the last
    train(cfg, progress=False)
    assert len(means) == 3 and all(m.shape == (3,) for m in means)  # (loss, mse, loss EMA)
    summary5 = json.loads((tmp_path / "run5" / "train_summary.json").read_text())
    assert summary5["final_loss_ema"] == pytest.approx(ema, rel=1e-5)  # same seed, same steps


def test_extending_steps_resumes_and_changed_config_is_refused(tmp_path):
    toy_store(tmp_path / "toy.zarr")
    train(load_config(overrides(tmp_path, 10)), progress=False)
    train(load_config(overrides(tmp_path, 15)), progress=False)
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert (summary["resumed_from"], summary["steps"]) == (10, 15)
    with pytest.raises(ConfigError, match="train.lr"):
        train(load_config([*overrides(tmp_path, 15), "train.lr=0.5"]), progress=False)


def test_missing_store_key_is_a_clear_error(tmp_path):
    toy_store(tmp_path / "toy.zarr")
    cfg = load_config([*overrides(tmp_path, 5), "task.obs_keys=[nope]"])
    with pytest.raises(StoreError, match="data/nope"):
        train(cfg, progress=False)


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    """SIGKILL mid-run, restart with the same command: training continues from the last checkpoint
    and ends with exactly the weights of an uninterrupted run."""
    toy_store(tmp_path / "toy.zarr")
    steps = 150  # long enough that the kill (after step 20) always lands mid-run
    train(load_config(overrides(tmp_path, steps, ckpt_every=10, run="straight")), progress=False)

    cmd = [sys.executable, "-m", "robolearn.cli", "train", *overrides(tmp_path, steps, ckpt_every=10, run="killed")]
    state = tmp_path / "killed" / "checkpoints" / "latest" / "train_state.json"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if state.exists():
                try:
                    if _step(state) >= 20:
                        break
                except (json.JSONDecodeError, OSError):
                    pass
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert 20 <= _step(state) < steps, "the kill must land mid-run"
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "killed" / "train_summary.json").read_text())
    assert 20 <= summary["resumed_from"] < steps and summary["steps"] == steps
    assert summary["wall_s_total"] > summary["wall_s"]  # the killed session's time up to its checkpoint counts
    a = load_file(str(tmp_path / "straight" / "checkpoints" / "latest" / "ema.safetensors"))
    b = load_file(str(tmp_path / "killed" / "checkpoints" / "latest" / "ema.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def _step(state_json: Path) -> int:
    skeleton = json.loads(state_json.read_text())
    return dict((k, v) for k, v in skeleton["__dict__"])["step"]


def _swap_states(ckpt: Path) -> dict:
    """Each intermediate state a kill can leave during a checkpoint swap, built by hand from a
    complete checkpoint ``ckpt`` (``latest``): name -> function that puts the run in that state."""
    import shutil

    old, tmp = ckpt.with_name("latest.old"), ckpt.with_name("latest.tmp")

    def between_renames():  # latest -> latest.old done, latest.tmp -> latest not yet
        shutil.copytree(ckpt, tmp)
        ckpt.rename(old)

    def old_half_deleted():  # new latest in place, latest.old partly removed
        shutil.copytree(ckpt, old)
        (old / "model.safetensors").unlink()

    def tmp_half_written():  # killed while writing the next checkpoint
        shutil.copytree(ckpt, tmp)
        (tmp / "config.yaml").unlink()

    def old_and_partial_tmp():  # between the renames, then killed again while writing the next one
        ckpt.rename(old)
        shutil.copytree(old, tmp)
        (tmp / "policy.json").unlink()

    return {"between_renames": between_renames, "old_half_deleted": old_half_deleted,
            "tmp_half_written": tmp_half_written, "old_and_partial_tmp": old_and_partial_tmp}


@pytest.mark.parametrize("state", ["between_renames", "old_half_deleted", "tmp_half_written", "old_and_partial_tmp"])
def test_resume_from_every_intermediate_swap_state(tmp_path, state):
    """A run killed at any point of a checkpoint swap resumes from its last complete checkpoint, still
    refuses a changed config, and ends with the weights of the same run left alone (10 steps, then
    extended to 20)."""
    toy_store(tmp_path / "toy.zarr")
    for steps in (10, 20):
        train(load_config(overrides(tmp_path, steps, run="undisturbed")), progress=False)
    train(load_config(overrides(tmp_path, 10, run="run")), progress=False)
    ckpt = tmp_path / "run" / "checkpoints" / "latest"
    _swap_states(ckpt)[state]()
    with pytest.raises(ConfigError, match="train.lr"):  # the config check reads the surviving checkpoint
        train(load_config([*overrides(tmp_path, 20, run="run"), "train.lr=0.5"]), progress=False)
    train(load_config(overrides(tmp_path, 20, run="run")), progress=False)
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert (summary["resumed_from"], summary["steps"]) == (10, 20)
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["latest"]  # the next save cleaned up
    a = load_file(str(tmp_path / "undisturbed" / "checkpoints" / "latest" / "model.safetensors"))
    b = load_file(str(ckpt / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
