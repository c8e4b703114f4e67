"""The model zoo: every architecture registers a builder under its name."""

from cnnbench.models import (  # noqa: F401  (importing a family registers its models)
    alexnet,
    efficientnet,
    googlenet,
    lenet,
    resnet,
    vgg,
    vit,
)
from cnnbench.models.registry import build_model, list_models, model_options, register_model

__all__ = ["build_model", "list_models", "model_options", "register_model"]
