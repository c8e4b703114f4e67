"""torchvision's classification zoo as cnnbench models: ``tv_model`` with ``model.arch=<any torchvision
classification model>`` and ``model.weights=<weights enum name | DEFAULT | null>``.

The builder makes the architecture only (for the data's classes and channels); pretrained weights are
loaded by ``cnnbench.transfer`` into the architecture the weights were made for, before its head is
replaced, so that a weight that does not fit is an error and not silently re-initialised.
"""

from __future__ import annotations

import torchvision.models as tvm
from torch import nn

from cnnbench.errors import CnnbenchError
from cnnbench.models.registry import register_model
from cnnbench.models.surgery import set_input_channels


def classification_archs() -> list[str]:
    """Names of torchvision's ImageNet classification models (not detection, segmentation or video)."""
    return tvm.list_models(module=tvm)


def resolve_weights(arch: str, name: str) -> tvm.WeightsEnum:
    """The weights enum member ``name`` (or DEFAULT) of ``arch``, or a one-line error listing the choices."""
    enum = tvm.get_model_weights(arch)
    try:
        return enum[name]
    except KeyError:
        raise CnnbenchError(f"model.weights={name} is not a weight set of {arch}; available: "
                            f"{', '.join(enum.__members__)} (DEFAULT = {enum.DEFAULT.name})") from None


def arch_kwargs(arch: str, weights: str | None, image_size: int) -> dict:
    """What torchvision's own builders set when they load weights, so the architecture matches them."""
    kwargs: dict = {}
    if arch.startswith("vit_"):  # position embeddings are sized for one input size
        kwargs["image_size"] = resolve_weights(arch, weights).meta["min_size"][0] if weights else image_size
    if weights and arch in ("googlenet", "inception_v3"):
        kwargs.update(transform_input=True, aux_logits=True, init_weights=False)
    return kwargs


@register_model()
def tv_model(*, num_classes: int, in_channels: int, image_size: int, arch: str | None = None,
             weights: str | None = None) -> nn.Module:
    """A torchvision classification model, built by ``torchvision.models.get_model``."""
    archs = classification_archs()
    if arch not in archs:
        raise CnnbenchError(f"model.arch={arch} is not a torchvision classification model; available: "
                            f"{', '.join(archs)}")
    model = tvm.get_model(arch, weights=None, num_classes=num_classes, **arch_kwargs(arch, weights, image_size))
    set_input_channels(model, in_channels, adapt=False)
    return model
