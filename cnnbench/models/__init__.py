"""The model zoo: every architecture registers a builder under its name."""

from cnnbench.models import lenet, resnet  # noqa: F401  (registers the models)
from cnnbench.models.registry import build_model, list_models, model_options, register_model

__all__ = ["build_model", "list_models", "model_options", "register_model"]
