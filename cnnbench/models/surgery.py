"""Model surgery for transfer learning: find and replace the classifier heads, fit the input conv's channels."""

from __future__ import annotations

import torch
from torch import nn

from cnnbench.errors import CnnbenchError

HEAD_NAMES = ("fc", "classifier", "heads", "head")  # torchvision's and cnnbench's names for the classifier


def _last_layer(module: nn.Module) -> tuple[str, nn.Module] | None:
    """The last Linear (or 1x1 Conv2d, as in SqueezeNet) inside ``module``, itself included."""
    found = None
    for name, m in module.named_modules():
        if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)):
            found = (name, m)
    return found


def find_heads(model: nn.Module) -> list[str]:
    """Qualified names of the classifier layer and of any auxiliary classifiers (GoogLeNet, Inception)."""
    heads = []
    for attr in HEAD_NAMES:
        module = getattr(model, attr, None)
        hit = _last_layer(module) if isinstance(module, nn.Module) else None
        if hit is not None:
            heads.append(f"{attr}.{hit[0]}".rstrip("."))
            break
    if not heads:
        raise CnnbenchError(f"cannot find the classifier of {type(model).__name__}: none of "
                            f"{', '.join(HEAD_NAMES)} holds a Linear layer")
    for attr, module in model.named_children():
        hit = _last_layer(module) if attr.lower().startswith("aux") else None
        if hit is not None:
            heads.append(f"{attr}.{hit[0]}".rstrip("."))
    return heads


def replace_heads(model: nn.Module, num_classes: int) -> list[str]:
    """Swap every classifier layer for a freshly initialised one with ``num_classes`` outputs.

    Returns a line per replaced layer, e.g. ``fc: Linear(2048 -> 1000) replaced by Linear(2048 -> 5)``.
    """
    notes = []
    for name in find_heads(model):
        old = model.get_submodule(name)
        if isinstance(old, nn.Linear):
            new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
            shape = f"Linear({old.in_features} -> {{}})"
        else:
            new = nn.Conv2d(old.in_channels, num_classes, kernel_size=1, bias=old.bias is not None)
            shape = f"Conv2d({old.in_channels} -> {{}}, 1x1)"
        model.set_submodule(name, new.to(old.weight.device, old.weight.dtype))
        notes.append(f"{name}: {shape.format(old.weight.shape[0])} replaced by {shape.format(num_classes)}")
    return notes


def adapt_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A first-conv kernel (O, I, k, k) for ``in_channels`` inputs.

    RGB -> gray sums the colour kernels: the same as feeding the gray image repeated on three channels.
    Gray -> RGB spreads the kernel over the channels (/3): the same as converting RGB to its channel mean.
    """
    have = weight.shape[1]
    if have == 3 and in_channels == 1:
        return weight.sum(1, keepdim=True)
    if have == 1 and in_channels == 3:
        return weight.repeat(1, 3, 1, 1) / 3
    raise CnnbenchError(f"cannot adapt an input conv with {have} channels to {in_channels}")


def set_input_channels(model: nn.Module, in_channels: int, adapt: bool = True) -> list[str]:
    """Give the model's first conv ``in_channels`` inputs (its kernel adapted when ``adapt``, else new)."""
    name, conv = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), (None, None))
    if conv is None or conv.in_channels == in_channels:
        return []
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups, bias=conv.bias is not None, padding_mode=conv.padding_mode)
    new = new.to(conv.weight.device, conv.weight.dtype)
    if adapt:
        with torch.no_grad():
            new.weight.copy_(adapt_input_conv(conv.weight, in_channels))
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
    model.set_submodule(name, new)
    return [f"{name}: input channels {conv.in_channels} -> {in_channels}"
            + (" (pretrained kernel adapted)" if adapt else "")]
