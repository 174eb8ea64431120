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

Training-only augmentation (all off by default; eval/inference never changes): SpecAugment-style
masking (``time_masks`` masks of up to ``time_mask_width`` rows, ``freq_masks`` masks of up to
``freq_mask_width`` bins, set to 0 = the training mean after the datamodule's standardisation)
and a random circular time shift of up to ``time_shift`` rows within each clip's valid span
(rows and mask are rolled together, so the mask rule still holds). Small EmoDB-sized data sets
overfit a CNN trained from scratch quickly; these are the cheap standard regularisers.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from avemo.fusion.models.base import Encoder, EncoderOutput, last_valid_length
from avemo.fusion.models.dropout import Dropout
from avemo.fusion.registry import ENCODERS

FREQ_REDUCE = ("mean", "flatten")


class MaskedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics use valid (mask True) positions only."""

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:  # mask: [B,1,T,F]-able
        if not self.training or mask is None:
            return super().forward(x)
        assert self.running_mean is not None and self.running_var is not None  # tracked stats
        assert self.num_batches_tracked is not None
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

    def __init__(
        self,
        row_shape: tuple[int, ...],
        channels: list[int] | tuple[int, ...] = (32, 64, 128),
        pool_time: list[int] | tuple[int, ...] = (2, 2, 2),
        pool_freq: list[int] | tuple[int, ...] = (2, 2, 2),
        freq_reduce: str = "mean",
        dropout: float = 0.1,
        time_masks: int = 0,
        time_mask_width: int = 0,
        freq_masks: int = 0,
        freq_mask_width: int = 0,
        time_shift: int = 0,
    ) -> None:
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
        for k, v in {
            "time_masks": time_masks,
            "time_mask_width": time_mask_width,
            "freq_masks": freq_masks,
            "freq_mask_width": freq_mask_width,
            "time_shift": time_shift,
        }.items():
            if int(v) < 0:
                raise ValueError(f"audio_cnn {k} must be >= 0, got {v}")
        self.time_masks, self.time_mask_width = int(time_masks), int(time_mask_width)
        self.freq_masks, self.freq_mask_width = int(freq_masks), int(freq_mask_width)
        self.time_shift = int(time_shift)
        self.row_ndim = len(row_shape)
        blocks, c, f = [], c_in, n_freq
        for co, pt, pf in zip(channels, pool_time, pool_freq, strict=True):
            blocks.append(_Block(c, int(co), (int(pt), int(pf))))
            c, f = int(co), -(-f // int(pf))
        self.blocks = nn.ModuleList(blocks)
        self.freq_reduce = freq_reduce
        self.drop = Dropout(dropout)
        self.cell_dim = c
        self.out_dim = c if freq_reduce == "mean" else c * f
        self.time_stride = math.prod(int(k) for k in pool_time)  # ceil-mode pools from row 0

    def forward(self, x: Tensor, mask: Tensor) -> EncoderOutput:
        x = x.unsqueeze(2) if self.row_ndim == 1 else x  # [B, T, C, F]
        x = x.permute(0, 2, 1, 3)  # [B, C, T, F]
        x = torch.where(mask[:, None, :, None], x, torch.zeros((), dtype=x.dtype, device=x.device))
        if self.training:
            x, mask = self.augment(x, mask)
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

    def augment(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Random time shift + time/frequency masks on ``x [B, C, T, F]`` (training only)."""
        b, _, t, f = x.shape
        dev = x.device
        if self.time_shift > 0 and t > 1:
            n = last_valid_length(mask).clamp_min(1)  # roll inside [0, n): padding stays put
            s = torch.randint(-self.time_shift, self.time_shift + 1, (b,), device=dev)
            ar = torch.arange(t, device=dev)[None]
            src = torch.where(ar < n[:, None], (ar - s[:, None]) % n[:, None], ar)
            x = x.gather(2, src[:, None, :, None].expand_as(x))
            mask = mask.gather(1, src)
        keep = torch.ones(b, 1, t, f, dtype=torch.bool, device=dev)
        for count, width, size, dim in (
            (self.time_masks, self.time_mask_width, t, 2),
            (self.freq_masks, self.freq_mask_width, f, 3),
        ):
            if count <= 0 or width <= 0:
                continue
            ar = torch.arange(size, device=dev)[None, None]  # [1, 1, size]
            w = torch.randint(0, width + 1, (b, count, 1), device=dev)
            lo = (torch.rand(b, count, 1, device=dev) * (size - w + 1).clamp_min(1)).long()
            hit = ((ar >= lo) & (ar < lo + w)).any(1)  # [B, size]
            hit = hit[:, None, :, None] if dim == 2 else hit[:, None, None, :]
            keep = keep & ~hit
        if not bool(keep.all()):
            x = x * keep.to(x.dtype)
        return x, mask
