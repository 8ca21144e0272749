"""Image encoders (ResNet-18-GN, spatial softmax, crops) and image observations in both policies."""

import numpy as np
import pytest
import torch
from torch import nn

from robolearn.data.normalizer import compute_stats
from robolearn.policies import build_policy
from robolearn.policies.vision import ImageEncoder, ObsEncoder, ResNet18GN, SpatialSoftmax, crop_images


def test_resnet18gn_is_resnet18_with_groupnorm():
    net = ResNet18GN(width=64)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    assert sum(isinstance(m, nn.GroupNorm) for m in net.modules()) == 1 + 8 * 2 + 3  # stem, 8 blocks, 3 downsamples
    n_params = sum(p.numel() for p in net.parameters())
    assert 11.1e6 < n_params < 11.3e6  # ResNet-18 without its classifier: 11.2 M
    assert net(torch.zeros(1, 3, 76, 76)).shape == (1, 512, 3, 3)


def test_random_crops_are_windows_of_the_image_and_centre_crop_is_fixed():
    H, W = 10, 12
    img = torch.arange(H * W, dtype=torch.float32).reshape(1, 1, H, W).repeat(64, 2, 1, 1)
    crops = crop_images(img, (6, 7), random=True, generator=torch.Generator().manual_seed(0))
    assert crops.shape == (64, 2, 6, 7)
    tops_lefts = set()
    for c in crops:
        top, left = divmod(int(c[0, 0, 0]), W)
        torch.testing.assert_close(c, img[0, :, top:top + 6, left:left + 7])
        tops_lefts.add((top, left))
    assert len(tops_lefts) > 10  # really random, and covering many offsets
    centre = crop_images(img, (6, 7), random=False)
    torch.testing.assert_close(centre, img[:, :, 2:8, 2:9])
    with pytest.raises(ValueError, match="larger"):
        crop_images(img, (11, 7), random=False)


def test_spatial_softmax_finds_a_bright_spot():
    ss = SpatialSoftmax(in_channels=1, num_keypoints=1)
    with torch.no_grad():
        ss.proj.weight.fill_(50.0)
        ss.proj.bias.zero_()
    fmap = torch.zeros(1, 1, 5, 9)
    fmap[0, 0, 4, 0] = 1.0  # bottom-left corner
    x, y = ss(fmap)[0].tolist()
    assert x == pytest.approx(-1.0, abs=1e-3) and y == pytest.approx(1.0, abs=1e-3)


def test_image_encoder_augments_only_in_training():
    torch.manual_seed(0)
    enc = ImageEncoder((72, 72, 3), crop=(64, 64), width=8, feature_dim=5)  # a 2x2 feature map
    x = torch.randint(0, 255, (4, 72, 72, 3), dtype=torch.uint8)
    enc.eval()
    torch.testing.assert_close(enc(x), enc(x))
    enc.train()
    assert not torch.allclose(enc(x), enc(x))
    assert enc(x).shape == (4, 5)


def test_obs_encoder_one_encoder_per_camera_or_shared():
    shapes = {"pos": (3,), "a_image": (20, 20, 3), "b_image": (20, 20, 3)}
    sep = ObsEncoder(shapes, {"width": 8, "feature_dim": 6})
    shared = ObsEncoder(shapes, {"width": 8, "feature_dim": 6, "share": True})
    assert sep.feature_dim == shared.feature_dim == 3 + 2 * 6
    assert sep.image_encoders["a_image"] is not sep.image_encoders["b_image"]
    assert shared.image_encoders["a_image"] is shared.image_encoders["b_image"]
    with pytest.raises(ValueError, match="unknown vision settings"):
        ObsEncoder(shapes, {"widht": 8})
    with pytest.raises(ValueError, match="neither 1-D nor an image"):
        ObsEncoder({"depth": (20, 20)})


def _image_batch(B, To, T, rng):
    return {
        "obs.pos": torch.from_numpy(rng.normal(size=(B, To, 3)).astype(np.float32)),
        "obs.cam_image": torch.zeros((B, To, 40, 40, 3), dtype=torch.uint8),
        "action": torch.from_numpy(rng.normal(size=(B, T, 2)).astype(np.float32)),
    }


VISION = {"width": 4, "crop": [36, 36], "feature_dim": 16}
POLICIES = {
    "diffusion": dict(name="diffusion", horizon=8, n_obs_steps=2, n_action_steps=4, down_dims=[16, 32],
                      kernel_size=3, n_groups=4, step_embed_dim=16, num_train_timesteps=20, num_inference_steps=3,
                      vision=VISION),
    "act": dict(name="act", horizon=8, n_obs_steps=1, n_action_steps=4, dim_model=32, n_heads=4,
                dim_feedforward=64, n_encoder_layers=1, n_decoder_layers=1, n_vae_encoder_layers=1, vision=VISION),
}


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_policies_learn_from_images(name):
    """The image must matter: the action's sign says on which side of the image a bright square is;
    the state is noise."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = POLICIES[name]
    To, T = cfg["n_obs_steps"], cfg["horizon"]
    stats = compute_stats({"pos": rng.normal(size=(100, 3)), "action": rng.uniform(-1, 1, (100, 2))})
    policy = build_policy(cfg, {"pos": (3,), "cam_image": (40, 40, 3)}, 2, stats=stats)
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-3)

    def batch(B):
        b = _image_batch(B, To, T, rng)
        left = torch.from_numpy(rng.random(B) < 0.5)
        for i in range(B):
            col = 4 if left[i] else 24
            b["obs.cam_image"][i, :, 12:28, col:col + 12] = 255
        b["action"] = torch.where(left[:, None, None], 0.8, -0.8).expand(B, T, 2).clone()
        return b, left

    policy.train()
    for _ in range(200 if name == "diffusion" else 100):  # denoising needs more steps than regression
        b, _ = batch(16)
        loss, _ = policy.compute_loss(b)
        opt.zero_grad()
        loss.backward()
        opt.step()
    encoders = policy.obs_encoder.image_encoders if name == "diffusion" else policy.backbones
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoders.parameters())
    policy.eval()
    b, bright = batch(16)
    obs = {k[4:]: v for k, v in b.items() if k.startswith("obs.")}
    act = policy.predict_action(obs)
    assert act.shape == (16, 4, 2)
    assert ((act[:, 0, 0] > 0) == bright).float().mean() >= 0.9
