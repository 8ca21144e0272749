"""1-D temporal U-Net with FiLM conditioning, the noise-prediction network of Diffusion Policy.

Architecture after Chi et al., "Diffusion Policy" (RSS 2023), Sec. III-B ("CNN-based"): residual
blocks of Conv1d → GroupNorm → Mish over the action-sequence time axis; every block is modulated
by FiLM (Perez et al., AAAI 2018), a per-channel scale and bias predicted from the diffusion-step
embedding concatenated with the observation features.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn


class SinusoidalStepEmbedding(nn.Module):
    """Sinusoidal embedding of the diffusion step (Vaswani et al. 2017): ``(B,)`` → ``(B, dim)``."""

    def __init__(self, dim: int):
        super().__init__()
        if dim % 2:
            raise ValueError(f"embedding dim must be even, got {dim}")
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freq = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * (-math.log(10000.0) / (half - 1)))
        arg = t.float()[:, None] * freq[None, :]
        return torch.cat([arg.sin(), arg.cos()], dim=-1)


GEMM_MAX_T = 4  # training: levels this short (time steps) or strided run as one GEMM (see Conv1d)


class Conv1d(nn.Conv1d):
    """``nn.Conv1d`` that picks the faster CPU formulation for the two cases where torch's default is slow.

    1. Batch-1 inference: torch's CPU heuristic sends a batch of one with a ``1 x k`` kernel (every 1-D
       convolution) to its native im2col kernel, which is 2-4x slower here than oneDNN for the 128- and
       256-channel layers of this network (measured on our 2-core CPU: 400 µs vs 200 µs for 256
       channels, length 4). Deployment queries the policy with a batch of one.
    2. Training on short sequences: with gradients, oneDNN's 1-D convolution is slow on the coarse
       levels of the U-Net (time length <= 4, or stride 2): there one GEMM over the unfolded input
       (``(B*T_out, C_in*k) @ (C_in*k, C_out)``, forward and backward) is 1.4-1.8x faster (measured
       fwd+bwd at batch 128, one thread, AMD EPYC: 256->256 channels, k 5, length 4: 38.3 vs 22.9 ms;
       see benchmarks/bench_vs_lerobot.py). The same function up to float summation order (~1e-6).

    Everything else (batched evaluation, long levels, other devices; for case 1 also ``torch.compile``'s
    trace, whose fake tensors cannot enter oneDNN's call) uses the standard path. Same parameters, same
    state-dict keys. Shapes: ``(B, C_in, T)`` → ``(B, C_out, T_out)``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dtype != torch.float32:
            return super().forward(x)
        if torch.is_grad_enabled():
            if (self.groups == 1 and self.dilation == (1,) and self.padding_mode == "zeros"
                    and isinstance(self.padding, tuple) and (x.shape[-1] <= GEMM_MAX_T or self.stride[0] > 1)):
                return self._gemm(x)
        elif (x.shape[0] == 1 and self.in_channels >= 128 and torch.backends.mkldnn.is_available()
              and not torch.compiler.is_compiling()
              and self.padding_mode == "zeros" and isinstance(self.padding, tuple)):
            return torch.mkldnn_convolution(x.contiguous(), self.weight, self.bias, self.padding, self.stride,
                                            self.dilation, self.groups)
        return super().forward(x)

    def _gemm(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution as one matrix product over the unfolded input (im2col), ``(B, C_in, T)``
        → ``(B, C_out, T_out)``."""
        (k,), (stride,), (pad,) = self.kernel_size, self.stride, self.padding
        B = x.shape[0]
        xp = nn.functional.pad(x, (pad, pad))
        t_out = (xp.shape[2] - k) // stride + 1
        if torch.compiler.is_compiling():  # inductor's CPU code for unfold's backward corrupted memory
            # with 2 threads (torch 2.13: "malloc_consolidate(): invalid chunk size"); k strided slices
            cols = torch.stack([xp[:, :, j: j + stride * (t_out - 1) + 1: stride] for j in range(k)], dim=-1)
        else:  # eager: unfold is a view, 6 % faster per training step than the stacked slices
            cols = xp.unfold(2, k, stride)  # (B, C_in, T_out, k)
        cols = cols.permute(0, 2, 1, 3).reshape(B * t_out, self.in_channels * k)
        w = self.weight.reshape(self.out_channels, self.in_channels * k)
        y = torch.addmm(self.bias, cols, w.t()) if self.bias is not None else cols @ w.t()
        return y.reshape(B, t_out, self.out_channels).transpose(1, 2)


class ConvBlock(nn.Module):
    """Conv1d (same padding) → GroupNorm → Mish on ``(B, C, T)``."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, n_groups: int):
        super().__init__()
        self.net = nn.Sequential(
            Conv1d(c_in, c_out, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, c_out),
            nn.Mish(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class FiLMResidualBlock(nn.Module):
    """Two conv blocks; the first one's output is scaled and shifted per channel by FiLM of ``cond``.

    Shapes: ``x (B, c_in, T)``, ``cond (B, cond_dim)`` → ``(B, c_out, T)``.
    """

    def __init__(self, c_in: int, c_out: int, cond_dim: int, kernel_size: int, n_groups: int):
        super().__init__()
        self.block1 = ConvBlock(c_in, c_out, kernel_size, n_groups)
        self.block2 = ConvBlock(c_out, c_out, kernel_size, n_groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * c_out))
        self.skip = Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.block1(x)
        scale, bias = rearrange(self.film(cond), "b (film c) -> film b c 1", film=2)  # each (B, c_out, 1)
        h = self.block2(h * scale + bias)
        return h + self.skip(x)


class ConditionalUnet1D(nn.Module):
    """Noise-prediction U-Net over action sequences.

    Args:
        action_dim: channels of the input/output sequence ``A``.
        cond_dim: size of the global conditioning vector (flattened observation features).
        down_dims: channels per resolution level; the time axis halves between levels, so the
            horizon must be divisible by ``2 ** (len(down_dims) - 1)``.
        step_embed_dim: size of the diffusion-step embedding.
        kernel_size: temporal convolution kernel.
        n_groups: GroupNorm groups.

    Forward: ``sample (B, T, A)``, ``timestep (B,)`` or scalar int, ``cond (B, cond_dim)`` →
    ``(B, T, A)``.
    """

    def __init__(self, action_dim: int, cond_dim: int, down_dims=(64, 128, 256), step_embed_dim: int = 128,
                 kernel_size: int = 5, n_groups: int = 8):
        super().__init__()
        self.step_embed = nn.Sequential(
            SinusoidalStepEmbedding(step_embed_dim),
            nn.Linear(step_embed_dim, 4 * step_embed_dim),
            nn.Mish(),
            nn.Linear(4 * step_embed_dim, step_embed_dim),
        )
        c = step_embed_dim + cond_dim
        dims = [action_dim, *down_dims]
        block = lambda i, o: FiLMResidualBlock(i, o, c, kernel_size, n_groups)  # noqa: E731
        self.down = nn.ModuleList()
        for level, (c_in, c_out) in enumerate(zip(dims[:-1], dims[1:])):
            last = level == len(down_dims) - 1
            self.down.append(nn.ModuleList([
                block(c_in, c_out), block(c_out, c_out),
                nn.Identity() if last else Conv1d(c_out, c_out, 3, stride=2, padding=1),
            ]))
        self.mid = nn.ModuleList([block(down_dims[-1], down_dims[-1]), block(down_dims[-1], down_dims[-1])])
        self.up = nn.ModuleList()
        for level, (c_skip, c_out) in enumerate(zip(reversed(down_dims[1:]), reversed(down_dims[:-1]))):
            self.up.append(nn.ModuleList([
                block(2 * c_skip, c_out), block(c_out, c_out),
                nn.ConvTranspose1d(c_out, c_out, 4, stride=2, padding=1),
            ]))
        self.final = nn.Sequential(ConvBlock(down_dims[0], down_dims[0], kernel_size, n_groups),
                                   nn.Conv1d(down_dims[0], action_dim, 1))
        self.n_levels = len(down_dims)

    def forward(self, sample: torch.Tensor, timestep, cond: torch.Tensor) -> torch.Tensor:
        B, T, _ = sample.shape
        if T % (2 ** (self.n_levels - 1)):
            raise ValueError(f"horizon {T} must be divisible by {2 ** (self.n_levels - 1)}")
        t = torch.as_tensor(timestep, device=sample.device)
        if t.ndim == 0:
            t = t.expand(B)
        c = torch.cat([self.step_embed(t), cond], dim=-1)
        x = rearrange(sample, "b t a -> b a t")  # channels first: convolutions run along time
        skips = []
        for res1, res2, down in self.down:
            x = res2(res1(x, c), c)
            skips.append(x)
            x = down(x)
        for res in self.mid:
            x = res(x, c)
        for res1, res2, up in self.up:
            x = torch.cat([x, skips.pop()], dim=1)
            x = up(res2(res1(x, c), c))
        return rearrange(self.final(x), "b a t -> b t a")
