"""Image encoders and the observation encoder shared by every policy.

* :class:`ResNet18GN`: the ResNet-18 layout (He et al., "Deep Residual Learning for Image
  Recognition", CVPR 2016: a 7×7 stride-2 stem, max-pool, four stages of two basic blocks) with every
  BatchNorm replaced by GroupNorm (Wu & He, ECCV 2018), as Diffusion Policy does (Chi et al. 2023,
  Sec. IV-B): batch statistics misbehave with the EMA weights and small batches of correlated frames.
  ``width`` scales every stage (64 is ResNet-18 itself; 16 or 32 make it affordable on a CPU).
  Written in plain torch: torchvision does not load on every machine we support.
* :class:`SpatialSoftmax`: per-keypoint softmax over the feature map and the expected ``(x, y)``
  of each keypoint (Levine et al., "End-to-End Training of Deep Visuomotor Policies", JMLR 2016,
  Sec. 4.2), the pooling robomimic and Diffusion Policy use.
* :func:`crop_images`: a random crop per sample in training (the augmentation of Diffusion Policy:
  84×84 → 76×76 for robomimic tasks), the centre crop at evaluation.
* :class:`ImageEncoder`: ``uint8 (B, H, W, 3)`` → crop → ResNet → spatial softmax (or average
  pooling) → linear → ``(B, feature_dim)``; :meth:`ImageEncoder.feature_map` gives the raw map for
  policies that attend over it (ACT).
* :class:`ObsEncoder`: one observation dict → per-step features ``(B, T, D)``: low-dim keys
  normalized by the policy's normalizer, each camera through its own encoder (or one shared).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def _gn(channels: int) -> nn.GroupNorm:
    # Diffusion Policy's choice: one group per 16 channels (at least one group).
    return nn.GroupNorm(max(1, channels // 16), channels)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with GroupNorm and a residual connection (ResNet's basic block).

    Input ``(B, C_in, H, W)`` → ``(B, C_out, H / stride, W / stride)``.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = _gn(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = _gn(c_out)
        self.down = None
        if stride != 1 or c_in != c_out:
            self.down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), _gn(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return F.relu(y + (x if self.down is None else self.down(x)))


class ResNet18GN(nn.Module):
    """ResNet-18 with GroupNorm, without the classifier: ``(B, 3, H, W)`` → ``(B, 8 * width, ⌈H/32⌉, ⌈W/32⌉)``.

    Args:
        width: channels of the first stage (64 in ResNet-18); stages have ``width × (1, 2, 4, 8)``.
        in_channels: image channels.
    """

    def __init__(self, width: int = 64, in_channels: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), _gn(width), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        stages, c = [], width
        for i, mult in enumerate((1, 2, 4, 8)):
            c_out = width * mult
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(c, c_out, stride), BasicBlock(c_out, c_out)))
            c = c_out
        self.stages = nn.Sequential(*stages)
        self.out_channels = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


def _unit_grid(n: int, like: torch.Tensor) -> torch.Tensor:
    """``n`` evenly spaced points from -1 to 1 (``torch.linspace(-1, 1, n)``; ``[-1]`` for ``n = 1``) with
    ``like``'s dtype and device. Written with ``arange``: torch's TorchScript ONNX exporter types
    ``linspace`` as float64, which ONNX Runtime then refuses (``robolearn.policies.export``)."""
    return torch.arange(n, device=like.device, dtype=like.dtype) * (2.0 / max(n - 1, 1)) - 1.0


class SpatialSoftmax(nn.Module):
    """Keypoints of a feature map (Levine et al. 2016, Sec. 4.2).

    A 1×1 convolution makes ``num_keypoints`` maps; each is soft-maxed over its ``h × w`` positions and
    reduced to its expected ``(x, y)`` in ``[-1, 1]``. ``(B, C, h, w)`` → ``(B, 2 * num_keypoints)``.
    """

    def __init__(self, in_channels: int, num_keypoints: int = 32):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, num_keypoints, 1)
        self.num_keypoints = num_keypoints

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        attn = torch.softmax(rearrange(self.proj(x), "b k h w -> b k (h w)"), dim=-1)
        ys, xs = _unit_grid(h, attn), _unit_grid(w, attn)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        kx = (attn * grid_x.reshape(1, 1, -1)).sum(-1)
        ky = (attn * grid_y.reshape(1, 1, -1)).sum(-1)
        return rearrange(torch.stack([kx, ky], dim=-1), "b k xy -> b (k xy)")  # (x0, y0, x1, y1, ...)


def crop_images(x: torch.Tensor, size: Sequence[int], random: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Crop ``(B, C, H, W)`` images to ``size = (h, w)``: a random window per sample, or the centre.

    Raises:
        ValueError: a crop larger than the image.
    """
    b, c, H, W = x.shape
    h, w = int(size[0]), int(size[1])
    if h > H or w > W:
        raise ValueError(f"crop {h}x{w} is larger than the image {H}x{W}")
    if (h, w) == (H, W):
        return x
    if not random:
        top, left = (H - h) // 2, (W - w) // 2
        return x[:, :, top:top + h, left:left + w]
    tops = torch.randint(0, H - h + 1, (b,), generator=generator, device=x.device)
    lefts = torch.randint(0, W - w + 1, (b,), generator=generator, device=x.device)
    rows = (tops[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (B, h, 1)
    cols = (lefts[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, w)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return rearrange(rearrange(x, "b c h w -> b h w c")[batch, rows, cols], "b h w c -> b c h w")


class ImageEncoder(nn.Module):
    """One camera's encoder: ``uint8 (B, H, W, 3)`` → ``(B, feature_dim)``.

    Pixels are scaled to ``[0, 1]``, cropped (random in training mode, centre in eval mode), passed
    through :class:`ResNet18GN` and pooled.

    Args:
        image_shape: ``(H, W, 3)`` of the stored images.
        crop: ``(h, w)`` crop size (``None``: no crop).
        width: ResNet width (64 = ResNet-18).
        pooling: ``"spatial_softmax"`` (Diffusion Policy's), ``"avg"`` (global average pooling), or
            ``"none"``: no pooling and no head, for callers of :meth:`feature_map` only (ACT).
        num_keypoints: spatial-softmax keypoints.
        feature_dim: output size (a linear layer after pooling).

    Raises:
        ValueError: an image shape that is not ``(H, W, C)``, a crop larger than it, or unknown pooling.
    """

    def __init__(self, image_shape: Sequence[int], crop: Sequence[int] | None = None, width: int = 64,
                 pooling: str = "spatial_softmax", num_keypoints: int = 32, feature_dim: int = 64):
        super().__init__()
        if len(image_shape) != 3:
            raise ValueError(f"image shape must be (H, W, C), got {tuple(image_shape)}")
        H, W, C = (int(v) for v in image_shape)
        self.crop = (H, W) if crop is None else (int(crop[0]), int(crop[1]))
        if self.crop[0] > H or self.crop[1] > W:
            raise ValueError(f"crop {self.crop} is larger than the image {(H, W)}")
        if pooling not in ("spatial_softmax", "avg", "none"):
            raise ValueError(f"pooling must be 'spatial_softmax', 'avg' or 'none', got {pooling!r}")
        self.backbone = ResNet18GN(width, C)
        c = self.backbone.out_channels
        self.map_channels = c
        with torch.no_grad():  # size of the feature map of a crop
            self.map_size = tuple(self.backbone(torch.zeros(1, C, *self.crop)).shape[2:])
        if pooling == "none":
            self.pool = self.head = None
            self.feature_dim = 0
            return
        if pooling == "spatial_softmax":
            self.pool = SpatialSoftmax(c, num_keypoints)
            pooled = 2 * num_keypoints
        else:
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
            pooled = c
        self.head = nn.Linear(pooled, feature_dim)
        self.feature_dim = int(feature_dim)

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = rearrange(images, "b h w c -> b c h w").float() / 255.0
        return crop_images(x, self.crop, random=self.training)

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone output ``(B, 8 * width, h, w)`` of ``uint8 (B, H, W, C)`` images."""
        return self.backbone(self._prepare(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``uint8 (B, H, W, C)`` → ``(B, feature_dim)``.

        Raises:
            RuntimeError: built with ``pooling="none"`` (use :meth:`feature_map`).
        """
        if self.head is None:
            raise RuntimeError("this ImageEncoder has no pooling head (pooling='none'); use feature_map()")
        return self.head(self.pool(self.feature_map(images)))


def is_image_shape(shape: Sequence[int]) -> bool:
    """Whether a per-step observation shape is an image ``(H, W, C)`` (C in 1, 3, 4)."""
    return len(shape) == 3 and int(shape[-1]) in (1, 3, 4)


#: Defaults of the ``vision`` section of a policy config.
VISION_DEFAULTS: dict[str, Any] = {"width": 64, "crop": None, "pooling": "spatial_softmax", "num_keypoints": 32,
                                   "feature_dim": 64, "share": False}


def vision_settings(vision: Mapping[str, Any] | None) -> dict[str, Any]:
    """``vision`` completed with :data:`VISION_DEFAULTS`.

    Raises:
        ValueError: a key that is not a vision setting.
    """
    unknown = set(vision or {}) - set(VISION_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown vision settings {sorted(unknown)}; known: {sorted(VISION_DEFAULTS)}")
    return {**VISION_DEFAULTS, **dict(vision or {})}


class ObsEncoder(nn.Module):
    """Per-step features of an observation dict: ``{key: (B, T, *shape)}`` → ``(B, T, feature_dim)``.

    Low-dim keys (1-D) are normalized by ``normalizer`` and concatenated; image keys (``(H, W, C)``
    uint8) each go through an :class:`ImageEncoder`, one per camera unless ``vision["share"]``.

    The policy's normalizer is passed to :meth:`forward` rather than held, so its buffers appear
    once in the policy's state dict.

    Args:
        obs_shapes: ``{key: per-step shape}``, in the order features are concatenated.
        vision: image encoder settings (see :data:`VISION_DEFAULTS`; ``crop`` as ``[h, w]``).

    Raises:
        ValueError: a shape that is neither 1-D nor an image, or unknown ``vision`` keys.
    """

    def __init__(self, obs_shapes: Mapping[str, Sequence[int]], vision: Mapping[str, Any] | None = None):
        super().__init__()
        self.vision = vision_settings(vision)
        self.lowdim_keys, self.image_keys = [], []
        for k, shape in obs_shapes.items():
            if len(shape) == 1:
                self.lowdim_keys.append(k)
            elif is_image_shape(shape):
                self.image_keys.append(k)
            else:
                raise ValueError(f"observation '{k}' has shape {tuple(shape)}: neither 1-D nor an image (H, W, C)")
        self.lowdim_dim = sum(int(obs_shapes[k][0]) for k in self.lowdim_keys)
        v = self.vision
        make = lambda shape: ImageEncoder(shape, v["crop"], v["width"], v["pooling"], v["num_keypoints"],  # noqa: E731
                                          v["feature_dim"])
        if self.image_keys and v["share"]:
            shared = make(obs_shapes[self.image_keys[0]])
            self.image_encoders = nn.ModuleDict({k: shared for k in self.image_keys})
        else:
            self.image_encoders = nn.ModuleDict({k: make(obs_shapes[k]) for k in self.image_keys})
        self.feature_dim = self.lowdim_dim + len(self.image_keys) * int(v["feature_dim"])

    def lowdim(self, obs: Mapping[str, torch.Tensor], normalizer: nn.Module) -> torch.Tensor:
        """Normalized low-dim features ``(B, T, lowdim_dim)``."""
        parts = [normalizer.normalize(k, obs[k].float()) for k in self.lowdim_keys]
        if not parts:
            first = obs[self.image_keys[0]]
            return first.new_zeros((*first.shape[:2], 0), dtype=torch.float32)
        return torch.cat(parts, dim=-1)

    def forward(self, obs: Mapping[str, torch.Tensor], normalizer: nn.Module) -> torch.Tensor:
        """``{key: (B, T, *shape)}`` → ``(B, T, feature_dim)``; ``normalizer`` normalizes the low-dim keys.

        Raises:
            KeyError: a key of ``obs_shapes`` missing from ``obs``.
        """
        for k in (*self.lowdim_keys, *self.image_keys):
            if k not in obs:
                raise KeyError(f"observation key '{k}' missing (got {sorted(obs)})")
        feats = [self.lowdim(obs, normalizer)]
        for k in self.image_keys:
            frames = rearrange(obs[k], "b t h w c -> (b t) h w c")  # every step of every sample
            feats.append(rearrange(self.image_encoders[k](frames), "(b t) d -> b t d", b=obs[k].shape[0]))
        return torch.cat(feats, dim=-1)
