"""Run a small float TFLite graph with torch: the flatbuffer is read once into constants and an op list.

No TFLite runtime is needed (none ships for every Python/CPU this project runs on): the
``tflite`` package parses the flatbuffer (pure Python), fp16 constants behind ``DEQUANTIZE`` ops
are expanded to float32 at load time, and ``forward`` runs the ops in graph order on NCHW torch
tensors. Only the ops the face detectors use are supported; any other op is refused at load time
with its name, never silently skipped.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_NP_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 4: np.int64}


def _op_names() -> dict[int, str]:
    import tflite

    return {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}


def _options(op: Any, cls_name: str) -> Any:
    import tflite

    table = op.BuiltinOptions()
    if table is None:
        return None
    opt = getattr(tflite, cls_name)()
    opt.Init(table.Bytes, table.Pos)
    return opt


def _activation(code: int) -> Callable[[torch.Tensor], torch.Tensor]:
    acts = {0: lambda x: x, 1: F.relu, 2: lambda x: x.clamp(-1, 1), 3: lambda x: x.clamp(0, 6)}
    if code not in acts:
        raise ValueError(f"unsupported fused activation {code}")
    return acts[code]


def _same_pad(size: int, k: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow 'SAME': total padding split with the extra pixel after (bottom/right)."""
    eff = (k - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + eff - size, 0)
    return total // 2, total - total // 2


class TFLiteGraph(nn.Module):
    """A float TFLite model as a torch module: ``forward(x NHWC float) -> outputs`` (TFLite order,
    TFLite layouts). Constants are registered buffers, so ``state_dict()`` holds every weight."""

    SUPPORTED = (
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "RELU",
        "ADD",
        "PAD",
        "MAX_POOL_2D",
        "RESIZE_BILINEAR",
        "RESHAPE",
        "DEQUANTIZE",
    )

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        import tflite

        buf = open(path, "rb").read()
        model = tflite.Model.GetRootAsModel(buf, 0)
        if model.SubgraphsLength() != 1:
            raise ValueError(f"{path}: expected one subgraph, found {model.SubgraphsLength()}")
        g = model.Subgraphs(0)
        names = _op_names()
        self.input_ids = [int(i) for i in g.InputsAsNumpy()]
        self.output_ids = [int(i) for i in g.OutputsAsNumpy()]
        self.shapes = {
            i: [int(v) for v in g.Tensors(i).ShapeAsNumpy()] for i in range(g.TensorsLength())
        }
        consts: dict[int, np.ndarray] = {}
        for i in range(g.TensorsLength()):
            t = g.Tensors(i)
            data = model.Buffers(t.Buffer()).DataAsNumpy()
            if isinstance(data, np.ndarray) and data.size:
                dtype = _NP_TYPES.get(t.Type())
                if dtype is None:
                    raise ValueError(f"{path}: tensor {t.Name()!r} has unsupported type {t.Type()}")
                consts[i] = np.frombuffer(data.tobytes(), dtype).reshape(self.shapes[i])
        self.ops: list[tuple[str, list[int], list[int], dict[str, Any]]] = []
        for k in range(g.OperatorsLength()):
            op = g.Operators(k)
            code = model.OperatorCodes(op.OpcodeIndex())
            name = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
            ins = [int(i) for i in op.InputsAsNumpy()]
            outs = [int(i) for i in op.OutputsAsNumpy()]
            if name not in self.SUPPORTED:
                raise ValueError(f"{path}: TFLite op {name} is not supported by this reader")
            if name == "DEQUANTIZE" and ins[0] in consts:  # fp16 weights: expand once
                consts[outs[0]] = consts[ins[0]].astype(np.float32)
                continue
            self.ops.append((name, ins, outs, self._parse(name, op)))
        # constants in the layout torch wants (conv kernels OIHW, depthwise [C*M, 1, KH, KW])
        self._names: dict[int, str] = {}
        for name, ins, _, _ in self.ops:
            for pos, i in enumerate(ins):
                if i in consts and i not in self._names:
                    arr = consts[i]
                    if name == "CONV_2D" and pos == 1:
                        arr = arr.transpose(0, 3, 1, 2)
                    elif name == "DEPTHWISE_CONV_2D" and pos == 1:
                        arr = arr.transpose(3, 0, 1, 2)
                    key = f"t{i}"
                    self.register_buffer(key, torch.from_numpy(np.array(arr, copy=True)))
                    self._names[i] = key

    @staticmethod
    def _parse(name: str, op: Any) -> dict[str, Any]:
        if name == "CONV_2D":
            o = _options(op, "Conv2DOptions")
            return {
                "same": o.Padding() == 0,
                "stride": (o.StrideH(), o.StrideW()),
                "dilation": (o.DilationHFactor(), o.DilationWFactor()),
                "act": o.FusedActivationFunction(),
            }
        if name == "DEPTHWISE_CONV_2D":
            o = _options(op, "DepthwiseConv2DOptions")
            return {
                "same": o.Padding() == 0,
                "stride": (o.StrideH(), o.StrideW()),
                "dilation": (o.DilationHFactor(), o.DilationWFactor()),
                "act": o.FusedActivationFunction(),
            }
        if name == "MAX_POOL_2D":
            o = _options(op, "Pool2DOptions")
            return {
                "same": o.Padding() == 0,
                "stride": (o.StrideH(), o.StrideW()),
                "kernel": (o.FilterHeight(), o.FilterWidth()),
                "act": o.FusedActivationFunction(),
            }
        if name == "ADD":
            o = _options(op, "AddOptions")
            return {"act": o.FusedActivationFunction() if o is not None else 0}
        if name == "RESIZE_BILINEAR":
            o = _options(op, "ResizeBilinearOptions")
            return {
                "align_corners": bool(o.AlignCorners()),
                "half_pixel": bool(o.HalfPixelCenters()),
            }
        return {}

    def _const(self, i: int) -> torch.Tensor:
        return getattr(self, self._names[i])

    def _padded(
        self,
        x: torch.Tensor,
        kernel: tuple[int, int],
        stride: tuple[int, int],
        dilation: tuple[int, int],
        same: bool,
        value: float = 0.0,
    ) -> torch.Tensor:
        if not same:
            return x
        ph = _same_pad(x.shape[2], kernel[0], stride[0], dilation[0])
        pw = _same_pad(x.shape[3], kernel[1], stride[1], dilation[1])
        if any(ph + pw):
            x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]), value=value)
        return x

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x``: ``[N, H, W, C]`` float input as the TFLite model takes it (batch of any size)."""
        env: dict[int, torch.Tensor] = {self.input_ids[0]: x.permute(0, 3, 1, 2)}
        for name, ins, outs, o in self.ops:
            a = env[ins[0]] if ins[0] in env else self._const(ins[0])
            if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                w = self._const(ins[1])
                b = self._const(ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
                a = self._padded(a, (w.shape[2], w.shape[3]), o["stride"], o["dilation"], o["same"])
                groups = a.shape[1] if name == "DEPTHWISE_CONV_2D" else 1
                y = _activation(o["act"])(F.conv2d(a, w, b, o["stride"], 0, o["dilation"], groups))
            elif name == "RELU":
                y = F.relu(a)
            elif name == "ADD":
                other = env[ins[1]] if ins[1] in env else self._const(ins[1])
                y = _activation(o["act"])(a + other)
            elif name == "PAD":
                p = self._const(ins[1]).tolist()  # NHWC [[before, after]] * 4
                if p[0] != [0, 0]:
                    raise ValueError("PAD on the batch axis is not supported")
                y = F.pad(a, (p[2][0], p[2][1], p[1][0], p[1][1], p[3][0], p[3][1]))
            elif name == "MAX_POOL_2D":
                a = self._padded(
                    a, o["kernel"], o["stride"], (1, 1), o["same"], value=float("-inf")
                )
                y = _activation(o["act"])(F.max_pool2d(a, o["kernel"], o["stride"]))
            elif name == "RESIZE_BILINEAR":
                size = [int(v) for v in self._const(ins[1]).tolist()]
                if o["align_corners"] or o["half_pixel"]:
                    y = F.interpolate(
                        a, size=size, mode="bilinear", align_corners=o["align_corners"]
                    )
                else:  # legacy TF: source coordinate = destination * in / out, no half-pixel shift
                    y = _legacy_resize(a, size)
            else:  # RESHAPE of an NHWC tensor; the batch axis follows the input's
                shape = list(self.shapes[outs[0]])
                nhwc = a.permute(0, 2, 3, 1) if a.dim() == 4 else a
                y = nhwc.reshape([a.shape[0], *shape[1:]])
                if y.dim() == 4:
                    y = y.permute(0, 3, 1, 2)
            env[outs[0]] = y
        res = []
        for i in self.output_ids:
            y = env[i]
            res.append(y.permute(0, 2, 3, 1) if y.dim() == 4 else y)
        return res


def _legacy_resize(x: torch.Tensor, size: list[int]) -> torch.Tensor:
    h, w = x.shape[2:]
    ys = torch.arange(size[0], dtype=x.dtype, device=x.device) * (h / size[0])
    xs = torch.arange(size[1], dtype=x.dtype, device=x.device) * (w / size[1])
    y0 = ys.floor().long().clamp(max=h - 1)
    x0 = xs.floor().long().clamp(max=w - 1)
    y1, x1 = (y0 + 1).clamp(max=h - 1), (x0 + 1).clamp(max=w - 1)
    fy, fx = (ys - y0).view(1, 1, -1, 1), (xs - x0).view(1, 1, 1, -1)
    top = x[:, :, y0][..., x0] * (1 - fx) + x[:, :, y0][..., x1] * fx
    bot = x[:, :, y1][..., x0] * (1 - fx) + x[:, :, y1][..., x1] * fx
    return top * (1 - fy) + bot * fy
