
import numpy as np
import pytest



def make_episode(T: int, offset: float = 0.0, obs_dim: int = 3, act_dim: int = 2) -> dict[str, np.ndarray]:
    """A synthetic episode whose values encode (episode offset, step) so tests can check ordering."""
    t = np.arange(T, dtype=np.float32)[:, None]
    return {
        "obs": (offset + t + np.zeros((T, obs_dim), np.float32)).astype(np.float32),
        "action": (offset + t * 0.1 + np.zeros((T, act_dim), np.float32)).astype(np.float32),
    }


@pytest.fixture
def episode_factory():
    return make_episode


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    """A tiny diffusion policy trained for 10 steps on 2 insertion demos (residual RL's base, a policy to collect with)."""
    from robolearn.apps.collect import collect_demos
    from robolearn.train.trainer import train
    from robolearn.utils.config import load_config

    tmp = tmp_path_factory.mktemp("rlbase")
    store = tmp / "demos.zarr"
    cfg = load_config(["task=insertion", f"data.path={store}"])
    collect_demos(cfg.task, store, 2, progress=False)
    cfg = load_config(["task=insertion", f"data.path={store}", f"run_dir={tmp / 'base'}", "train.steps=10",
                       "train.batch_size=8", "train.val_every=10", "train.ckpt_every=10", "train.warmup_steps=2",
                       "data.val_ratio=0.5", "policy.down_dims=[16,32]", "policy.horizon=8", "policy.n_action_steps=4",
                       "policy.n_groups=4", "policy.step_embed_dim=16", "eval.n_envs=1"])
    train(cfg, progress=False)
    return tmp / "base"
