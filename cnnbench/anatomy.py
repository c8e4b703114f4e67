"""Layer-by-layer analysis of a model: output shapes, parameters, receptive fields, MACs and memory.

Receptive field r and jump j (the input-pixel distance between neighbouring outputs) follow the textbook
recurrence through every convolution and pooling, r_out = r_in + (k - 1) * d * j_in and j_out = j_in * s,
starting from r = j = 1 at the input. They are propagated through every tensor operation (a
TorchFunctionMode), so branches and shortcuts are handled: where paths merge (add, concatenate) the larger
field wins. Multiply-accumulates come from torch's own FLOP counter (MACs = FLOPs / 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode


def conv_output_size(n: int, kernel: int, padding: int = 0, stride: int = 1, dilation: int = 1) -> int:
    """floor((n + 2p - d(k - 1) - 1) / s) + 1, the side of a convolution's or pooling's output."""
    return (n + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def receptive_field(layers: list[tuple[int, int]]) -> tuple[int, int]:
    """(receptive field, jump) after a chain of (kernel, stride) layers, from r = j = 1 at the input."""
    r, j = 1, 1
    for k, s in layers:
        r, j = r + (k - 1) * j, j * s
    return r, j


def _pair(v) -> int:
    return v[0] if isinstance(v, (tuple, list)) else int(v)


def _kernel_stride_dilation(func, args, kwargs) -> tuple[int, int, int] | None:
    """(k, s, d) of a convolution or pooling call, or None for any other op."""
    def arg(i: int, name: str, default=None):
        return args[i] if len(args) > i else kwargs.get(name, default)

    if func in (F.conv1d, F.conv2d, F.conv3d, torch.conv2d):
        k = arg(1, "weight").shape[-1]
        return k, _pair(arg(3, "stride", 1)), _pair(arg(5, "dilation", 1))
    if func in (F.max_pool2d, F.avg_pool2d, torch.max_pool2d, torch._C._nn.avg_pool2d):
        k = _pair(arg(1, "kernel_size"))
        stride = arg(2, "stride", None)
        d = _pair(arg(4, "dilation", 1)) if func in (F.max_pool2d, torch.max_pool2d) else 1
        return k, _pair(stride) if stride not in (None, [], ()) else k, d
    if func in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d):
        n, out = arg(0, "input").shape[-1], _pair(arg(1, "output_size"))
        s = n // out
        return n - (out - 1) * s, s, 1
    return None


class _ReceptiveFieldMode(TorchFunctionMode):
    """Tags every tensor an op returns with the (r, j) of its inputs, updated by convs and pools."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        fields = [t._rf for t in _tensors((args, kwargs)) if hasattr(t, "_rf")]
        if fields:
            r, j = max(fields)
            ksd = _kernel_stride_dilation(func, args, kwargs)
            if ksd is not None:
                k, s, d = ksd
                r, j = r + (k - 1) * d * j, j * s
            for t in _tensors(out):
                t._rf = (r, j)
        return out


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


@dataclass
class LayerInfo:
    name: str
    type: str
    output_shape: tuple[int, ...]
    params: int
    receptive_field: int | None
    jump: int | None


@dataclass
class ModelReport:
    input_shape: tuple[int, ...]
    layers: list[LayerInfo] = field(default_factory=list)
    params: int = 0
    trainable_params: int = 0
    macs: int = 0
    activation_bytes: int = 0
    param_bytes: int = 0


def count_macs(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one forward pass of a (1, C, H, W) image, by torch's FLOP counter."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def _traced_pass(model: nn.Module, input_shape: tuple[int, int, int], hooked: dict[nn.Module, object]) -> None:
    """One (1, C, H, W) zero image through ``model`` in eval mode with receptive fields propagated; each module in
    ``hooked`` gets its forward hook for the pass."""
    handles = [m.register_forward_hook(hook) for m, hook in hooked.items()]
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, *input_shape, device=next(model.parameters()).device)
        x._rf = (1, 1)
        with torch.no_grad(), _ReceptiveFieldMode():
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


def analyze(model: nn.Module, input_shape: tuple[int, int, int]) -> ModelReport:
    """Run one (1, C, H, W) image through ``model`` in eval mode and describe every leaf layer."""
    report = ModelReport(input_shape=tuple(input_shape))
    names = {m: n for n, m in model.named_modules()}

    def hook(module: nn.Module, inputs, output) -> None:
        out = output[0] if isinstance(output, (tuple, list)) else output
        if not isinstance(out, torch.Tensor):
            return
        rf = getattr(out, "_rf", (None, None))
        report.layers.append(LayerInfo(names[module], type(module).__name__, tuple(out.shape[1:]),
                                       sum(p.numel() for p in module.parameters(recurse=False)), *rf))
        report.activation_bytes += out.numel() * out.element_size()

    _traced_pass(model, input_shape, {m: hook for m in model.modules() if not list(m.children())})
    report.macs = count_macs(model, input_shape)
    report.params = sum(p.numel() for p in model.parameters())
    report.trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    report.param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return report


def layer_fields(model: nn.Module, input_shape: tuple[int, int, int], names: list[str]
                 ) -> dict[str, tuple[int, int]]:
    """(receptive field, jump) of the output of each named module, blocks and stages included."""
    modules = dict(model.named_modules())
    found: dict[str, tuple[int, int]] = {}

    def hook(name: str):
        def record(module: nn.Module, inputs, output) -> None:
            out = output[0] if isinstance(output, (tuple, list)) else output
            if name not in found and hasattr(out, "_rf"):
                found[name] = out._rf
        return record

    _traced_pass(model, input_shape, {modules[n]: hook(n) for n in names})
    return found
