"""Small 2-D CNN over cached spectrogram / Log-Mel rows, trained on the task.

Input rows are frequency vectors ``[F]`` (or ``[C, F]`` with delta channels), so a clip is an
image ``[C, T, F]``. Blocks: Conv3x3 -> masked BatchNorm -> ReLU -> MaxPool(pool_time,
pool_freq). Output: one vector per remaining time step (frequency averaged or flattened) with a
time-downsampled mask, plus the last map's time-frequency cells (for attention-guided FBP).
Audio front-end / CNN sizes of the EmotiW papers are UNVERIFIED; the defaults below are ours.

Mask rule: invalid frames are zeroed before every conv and after every ReLU, so they equal the
conv's own zero padding; pooling uses ceil mode and happens after ReLU (values >= 0), so a
partial window over padding gives the same max as the unpadded edge; batch statistics are
taken over valid positions only.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from avemo.fusion.models.base import Encoder, EncoderOutput
from avemo.fusion.registry import ENCODERS

FREQ_REDUCE = ("mean", "flatten")


class MaskedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics use valid (mask True) positions only."""

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # mask broadcastable to [B,1,T,F]
        if not self.training:
            return super().forward(x)
        w = mask.to(x.dtype).expand(x.shape[0], 1, *x.shape[2:])
        n = w.sum().clamp_min(1.0)
        mean = (x * w).sum((0, 2, 3)) / n
        var = (((x - mean.view(1, -1, 1, 1)) ** 2) * w).sum((0, 2, 3)) / n
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum if self.momentum is not None else 0.1
            unbiased = var * n / (n - 1).clamp_min(1.0)
            self.running_mean.mul_(1 - m).add_(m * mean)
            self.running_var.mul_(1 - m).add_(m * unbiased)
        y = (x - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + self.eps)
        return y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, pool: tuple[int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn = MaskedBatchNorm2d(c_out)
        self.pool = nn.MaxPool2d(pool, ceil_mode=True) if pool != (1, 1) else None
        self.pool_size = pool

    def forward(self, x: Tensor, tmask: Tensor) -> tuple[Tensor, Tensor]:
        m = tmask[:, None, :, None]
        x = torch.relu(self.bn(self.conv(x), m)) * m.to(x.dtype)
        if self.pool is not None:
            x = self.pool(x)
            k = self.pool_size[0]
            tmask = nn.functional.max_pool1d(tmask[:, None].float(), k, k, ceil_mode=True)[:, 0] > 0
        return x, tmask


@ENCODERS.register("audio_cnn")
class AudioCNN(Encoder):
    """Small 2-D CNN over [T, F] spectrogram rows -> time sequence + mask (+ t-f cells)."""

    def __init__(self, row_shape: tuple[int, ...], channels: list[int] | tuple[int, ...] = (32, 64, 128),
                 pool_time: list[int] | tuple[int, ...] = (2, 2, 2),
                 pool_freq: list[int] | tuple[int, ...] = (2, 2, 2),
                 freq_reduce: str = "mean", dropout: float = 0.1) -> None:
        super().__init__()
        row_shape = tuple(row_shape)
        if len(row_shape) == 1:
            c_in, n_freq = 1, row_shape[0]
        elif len(row_shape) == 2:
            c_in, n_freq = row_shape
        else:
            raise ValueError(f"audio_cnn expects rows [F] or [C, F], got row shape {row_shape}")
        if not (len(channels) == len(pool_time) == len(pool_freq)):
            raise ValueError("audio_cnn: channels, pool_time and pool_freq need equal lengths")
        if freq_reduce not in FREQ_REDUCE:
            raise ValueError(f"audio_cnn freq_reduce must be one of {FREQ_REDUCE}")
        self.row_ndim = len(row_shape)
        blocks, c, f = [], c_in, n_freq
        for co, pt, pf in zip(channels, pool_time, pool_freq, strict=True):
            blocks.append(_Block(c, int(co), (int(pt), int(pf))))
            c, f = int(co), -(-f // int(pf))
        self.blocks = nn.ModuleList(blocks)
        self.freq_reduce = freq_reduce
        self.drop = nn.Dropout(dropout)
        self.cell_dim = c
        self.out_dim = c if freq_reduce == "mean" else c * f

    def forward(self, x: Tensor, mask: Tensor) -> EncoderOutput:
        x = x.unsqueeze(2) if self.row_ndim == 1 else x  # [B, T, C, F]
        x = x.permute(0, 2, 1, 3)  # [B, C, T, F]
        x = torch.where(mask[:, None, :, None], x, torch.zeros((), dtype=x.dtype, device=x.device))
        for block in self.blocks:
            x, mask = block(x, mask)
        b, c, t, f = x.shape
        x = self.drop(x)
        cells = x.permute(0, 2, 3, 1).reshape(b, t * f, c)
        cells_mask = mask[:, :, None].expand(b, t, f).reshape(b, t * f)
        if self.freq_reduce == "mean":
            seq = x.mean(3).transpose(1, 2)
        else:
            seq = x.permute(0, 2, 1, 3).reshape(b, t, c * f)
        return EncoderOutput(seq, mask, cells, cells_mask)
