"""Pictures of what a network computes: feature maps, first-layer filters, confusion matrix, mistakes.

``layers`` chooses and names the layers, ``cards`` draws captioned grids with PIL, ``charts`` the test charts with
matplotlib, ``callback`` decides when and writes them to TensorBoard and ``<run dir>/figures/``.
"""

from cnnbench.pictures.callback import Pictures, denormalize, snapshot_epochs
from cnnbench.pictures.layers import capture, default_feature_layers, trace

__all__ = ["Pictures", "capture", "default_feature_layers", "denormalize", "snapshot_epochs", "trace"]
