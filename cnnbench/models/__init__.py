"""The model zoo: every architecture registers a builder under its name."""

from cnnbench.models import (  # noqa: F401  (importing a family registers its models)
    airbench,
    alexnet,
    efficientnet,
    googlenet,
    lenet,
    resnet,
    timm_zoo,
    torchvision_zoo,
    vgg,
    vit,
)
from cnnbench.models.registry import build_from_config, build_model, list_models, model_options, register_model

__all__ = ["build_from_config", "build_model", "list_models", "model_options", "register_model"]
