"""ACT for low-dimensional and image observations, after Zhao et al., "Learning Fine-Grained Bimanual
Manipulation with Low-Cost Hardware" (RSS 2023), Sec. IV.

* A CVAE encoder (training only) reads ``[CLS, state, a_1 ... a_k]`` with a transformer encoder and
  predicts a diagonal Gaussian over a latent ``z`` (dim 32); at inference ``z = 0``.
* Cameras (Sec. IV-A): each camera's ResNet-18-GN feature map (:mod:`robolearn.policies.vision`,
  random crop in training) is projected to the model width and every spatial position becomes a
  token, with a learned position embedding.
* The policy's transformer encoder reads ``[z, state, image tokens]``; a
  transformer decoder with one learned query per action in the chunk attends to it, and a linear
  head turns the **last** decoder layer's output into the chunk ``(k, A)``.
* Loss: L1 between predicted and demonstrated actions (normalized) + ``kl_weight`` × KL (10).
* Normalization: mean/std with the std floored at 1e-2 (ACT's).
* Temporal ensembling (Sec. IV-B), optional: query every step and average every stored prediction
  for the current step with weights ``exp(-k * i)``, ``i = 0`` the oldest.

Two defects of the reference implementation are avoided, each with a test: its action head reads the
output of the *first* of seven decoder layers (so six are dead weight), and without cameras its
latent never reaches the transformer. Here the decoder is ``nn.TransformerDecoder`` whose output is
its last layer's, and the latent is always a token of the encoder's input.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from robolearn.policies.base import Policy
from robolearn.policies.normalizer import Normalizer
from robolearn.policies.vision import ImageEncoder, is_image_shape, vision_settings


def sinusoidal_positions(n: int, dim: int) -> torch.Tensor:
    """Fixed sinusoidal position table ``(n, dim)`` (Vaswani et al. 2017)."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(n, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table


class ACTPolicy(Policy):
    """ACT over low-dim observations (see the module docstring).

    Args:
        obs_shapes: ``{key: per-step shape}``: 1-D keys (concatenated into the state) and
            ``(H, W, C)`` uint8 camera images.
        action_dim: ``A``.
        horizon: chunk size ``k`` (actions predicted per query).
        n_obs_steps: must be 1 (ACT conditions on the current observation).
        n_action_steps: actions executed per query without temporal ensembling (``<= horizon``).
        dim_model, n_heads, dim_feedforward: transformer width (512, 8, 3200 in the paper).
        n_encoder_layers, n_decoder_layers, n_vae_encoder_layers: depths (4, 7, 4 in the paper).
        latent_dim: CVAE latent size (32).
        kl_weight: weight of the KL term (10).
        dropout: transformer dropout (0.1).
        temporal_ensemble_k: ``None`` (off) or the ensembling coefficient (0.01 in the paper); when
            on, :meth:`predict_action` returns one action per call and must be called every step.
        vision: image encoder settings (:data:`robolearn.policies.vision.VISION_DEFAULTS`; the pooling
            settings are unused: ACT attends over the feature map).
        stats: dataset statistics with ``mean``/``std`` for the low-dim obs keys and ``"action"``.

    Raises:
        ValueError: ``n_obs_steps != 1``, ``n_action_steps`` outside ``[1, horizon]``, an observation
            that is neither 1-D nor an image, no low-dim key, or ``dim_model`` not divisible by
            ``n_heads``.
    """

    def __init__(self, obs_shapes: Mapping[str, Sequence[int]], action_dim: int, horizon: int = 20,
                 n_obs_steps: int = 1, n_action_steps: int = 10, dim_model: int = 256, n_heads: int = 8,
                 dim_feedforward: int = 1024, n_encoder_layers: int = 4, n_decoder_layers: int = 4,
                 n_vae_encoder_layers: int = 4, latent_dim: int = 32, kl_weight: float = 10.0,
                 dropout: float = 0.1, temporal_ensemble_k: float | None = None,
                 vision: Mapping[str, Any] | None = None, stats: Mapping[str, Mapping[str, np.ndarray]] | None = None):
        super().__init__()
        self.obs_shapes = {k: tuple(int(d) for d in v) for k, v in obs_shapes.items()}
        self.lowdim_keys = [k for k, s in self.obs_shapes.items() if len(s) == 1]
        self.image_keys = [k for k, s in self.obs_shapes.items() if is_image_shape(s)]
        odd = [k for k in self.obs_shapes if k not in self.lowdim_keys and k not in self.image_keys]
        if odd:
            raise ValueError(f"observation '{odd[0]}' has shape {self.obs_shapes[odd[0]]}: neither 1-D nor an image")
        if not self.lowdim_keys:
            raise ValueError("ACT needs at least one low-dim (proprioceptive) observation key")
        if n_obs_steps != 1:
            raise ValueError(f"ACT conditions on the current observation: n_obs_steps must be 1, got {n_obs_steps}")
        if dim_model % n_heads:
            raise ValueError(f"dim_model {dim_model} must be divisible by n_heads {n_heads}")
        self.action_dim, self.horizon = int(action_dim), int(horizon)
        self.n_obs_steps, self.n_action_steps = 1, n_action_steps
        self.latent_dim, self.kl_weight = int(latent_dim), float(kl_weight)
        self.temporal_ensemble_k = None if temporal_ensemble_k is None else float(temporal_ensemble_k)
        self._config = dict(
            obs_shapes={k: list(v) for k, v in self.obs_shapes.items()}, action_dim=self.action_dim,
            horizon=self.horizon, n_obs_steps=1, n_action_steps=self.n_action_steps, dim_model=dim_model,
            n_heads=n_heads, dim_feedforward=dim_feedforward, n_encoder_layers=n_encoder_layers,
            n_decoder_layers=n_decoder_layers, n_vae_encoder_layers=n_vae_encoder_layers, latent_dim=latent_dim,
            kl_weight=kl_weight, dropout=dropout, temporal_ensemble_k=self.temporal_ensemble_k,
            **({"vision": dict(vision)} if vision else {}),
        )
        lowdim = {k: self.obs_shapes[k] for k in self.lowdim_keys}
        self.normalizer = Normalizer({**lowdim, "action": (self.action_dim,)}, mode="meanstd", stats=stats)
        state_dim = sum(s[0] for s in lowdim.values())
        v = vision_settings(vision)
        self.backbones = nn.ModuleDict({k: ImageEncoder(self.obs_shapes[k], v["crop"], v["width"], pooling="none")
                                        for k in self.image_keys})
        self.image_proj = nn.ModuleDict({k: nn.Conv2d(self.backbones[k].map_channels, dim_model, 1)
                                         for k in self.image_keys})
        n_image_tokens = sum(int(np.prod(self.backbones[k].map_size)) for k in self.image_keys)

        def layer():
            return nn.TransformerEncoderLayer(dim_model, n_heads, dim_feedforward, dropout, batch_first=True,
                                              norm_first=True)

        # CVAE encoder: [CLS, state, actions] -> (mu, logvar)
        self.vae_cls = nn.Parameter(torch.zeros(1, 1, dim_model))
        self.vae_state_proj = nn.Linear(state_dim, dim_model)
        self.vae_action_proj = nn.Linear(self.action_dim, dim_model)
        self.vae_encoder = nn.TransformerEncoder(layer(), n_vae_encoder_layers, enable_nested_tensor=False)
        self.register_buffer("vae_pos", sinusoidal_positions(2 + self.horizon, dim_model)[None], persistent=False)
        self.latent_head = nn.Linear(dim_model, 2 * latent_dim)
        # Policy: encoder over [z, state], decoder with one learned query per action.
        self.latent_proj = nn.Linear(latent_dim, dim_model)
        self.state_proj = nn.Linear(state_dim, dim_model)
        self.encoder_pos = nn.Parameter(torch.zeros(1, 2 + n_image_tokens, dim_model))
        self.encoder = nn.TransformerEncoder(layer(), n_encoder_layers, enable_nested_tensor=False)
        dec_layer = nn.TransformerDecoderLayer(dim_model, n_heads, dim_feedforward, dropout, batch_first=True,
                                               norm_first=True)
        self.decoder = nn.TransformerDecoder(dec_layer, n_decoder_layers, norm=nn.LayerNorm(dim_model))
        self.queries = nn.Parameter(torch.zeros(1, self.horizon, dim_model))
        self.action_head = nn.Linear(dim_model, self.action_dim)
        for p in (self.vae_cls, self.encoder_pos, self.queries):
            nn.init.normal_(p, std=0.02)
        self._ensemble: list[torch.Tensor] = []  # per past query: (B, horizon, A) predictions, oldest first

    def get_config(self) -> dict[str, Any]:
        return dict(self._config)

    def reset(self) -> None:
        """Forget the temporal-ensembling history (call at every episode start)."""
        self._ensemble = []

    # ------------------------------------------------------------------ network
    def _state(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        for k in self.obs_shapes:
            if k not in obs:
                raise KeyError(f"observation key '{k}' missing (got {sorted(obs)})")
        parts = [self.normalizer.normalize(k, obs[k][:, -1].float()) for k in self.lowdim_keys]  # the current step
        return torch.cat(parts, dim=-1)

    def _image_tokens(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """``(B, n_image_tokens, dim_model)``: every feature-map position of every camera (current step)."""
        if not self.image_keys:
            return None
        maps = [self.image_proj[k](self.backbones[k].feature_map(obs[k][:, -1])) for k in self.image_keys]
        tokens = [rearrange(m, "b d h w -> b (h w) d") for m in maps]  # one token per feature-map position
        return torch.cat(tokens, dim=1)

    def encode_latent(self, state: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CVAE encoder: normalized ``state (B, S)`` and ``actions (B, k, A)`` → ``mu, logvar (B, latent)``."""
        B = state.shape[0]
        tokens = torch.cat([repeat(self.vae_cls, "1 n d -> b n d", b=B),
                            rearrange(self.vae_state_proj(state), "b d -> b 1 d"), self.vae_action_proj(actions)], dim=1)
        out = self.vae_encoder(tokens + self.vae_pos)
        mu, logvar = self.latent_head(out[:, 0]).chunk(2, dim=-1)
        return mu, logvar

    def decode(self, state: torch.Tensor, z: torch.Tensor, image_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Policy network: normalized ``state (B, S)``, latent ``z (B, latent)`` and optional image
        tokens ``(B, N, dim_model)`` → chunk ``(B, k, A)`` (normalized), from the last decoder layer."""
        B = state.shape[0]
        tokens = torch.stack([self.latent_proj(z), self.state_proj(state)], dim=1)
        if image_tokens is not None:
            tokens = torch.cat([tokens, image_tokens], dim=1)
        tokens = tokens + self.encoder_pos
        memory = self.encoder(tokens)
        out = self.decoder(repeat(self.queries, "1 k d -> b k d", b=B), memory)
        return self.action_head(out)

    # ------------------------------------------------------------------ Policy API
    def compute_loss(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L1 reconstruction of the normalized chunk + ``kl_weight`` × KL(q(z|s,a) || N(0, I))
        (Zhao et al. 2023, Sec. IV, Algorithm 1).

        Args:
            batch: ``obs.<key>: (B, 1, D)`` and ``action: (B, horizon, A)`` in raw units.

        Returns:
            ``(loss, {"l1": ..., "kl": ...})``: the scalar loss and its two terms, detached (the KL
            unweighted, in nats per sample summed over the latent dimensions).
        """
        obs = {k[4:]: v for k, v in batch.items() if k.startswith("obs.")}
        state = self._state(obs)
        actions = self.normalizer.normalize("action", batch["action"][:, : self.horizon].float())
        mu, logvar = self.encode_latent(state, actions)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        pred = self.decode(state, z, self._image_tokens(obs))
        l1 = F.l1_loss(pred, actions)
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum(-1).mean()
        return l1 + self.kl_weight * kl, {"l1": l1.detach(), "kl": kl.detach()}

    @torch.no_grad()
    def predict_action_chunk(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The whole predicted chunk ``(B, horizon, A)`` in raw units, with ``z = 0`` (never
        ensembled: temporal ensembling is :meth:`predict_action`'s)."""
        state = self._state(obs)
        z = torch.zeros(state.shape[0], self.latent_dim, device=state.device)
        return self.normalizer.unnormalize("action", self.decode(state, z, self._image_tokens(obs)))

    @torch.no_grad()
    def predict_action(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``(B, n_action_steps, A)`` raw actions; with temporal ensembling ``(B, 1, A)``, the
        ensembled action for this step.

        Raises:
            ValueError: with temporal ensembling, a batch size that changed since :meth:`reset`.
        """
        chunk = self.predict_action_chunk(obs)
        if self.temporal_ensemble_k is None:
            return chunk[:, : self.n_action_steps]
        if self._ensemble and self._ensemble[0].shape[0] != chunk.shape[0]:
            raise ValueError("temporal ensembling needs the same batch every step; call reset() between episodes")
        self._ensemble.append(chunk)
        self._ensemble = self._ensemble[-self.horizon:]
        n = len(self._ensemble)
        # Query j (0 = oldest kept) predicted the current step as its action n - 1 - j.
        preds = torch.stack([c[:, n - 1 - j] for j, c in enumerate(self._ensemble)], dim=1)  # (B, n, A)
        w = torch.exp(-self.temporal_ensemble_k * torch.arange(n, dtype=preds.dtype, device=preds.device))
        w = w / w.sum()
        return (preds * w[None, :, None]).sum(1, keepdim=True)
