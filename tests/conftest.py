
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
