"""Pretrained weights into a model: fetch them (torchvision's cache, then its URL) and load them strictly.

The model is first built with the *source's* number of classes, so every pretrained tensor, the classifier
included, loads strictly: a key that is missing, extra or of another shape is an error listing the keys.
Only then are the input conv (for grayscale data on RGB weights, or the reverse, adapted as timm does) and the
head swapped for ones that fit the data (``cnnbench.models.surgery``).
"""

from __future__ import annotations

import urllib.error
from pathlib import Path

import torch
from torch import nn

from cnnbench.errors import CnnbenchError, first_line


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model`` strictly, or fail with one line listing the keys that do not fit."""
    own = model.state_dict()
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                  for k in sorted(own.keys() & state.keys()) if own[k].shape != state[k].shape]
    problems = [f"{label}: {', '.join(keys[:6])}{f' (+{len(keys) - 6} more)' if len(keys) > 6 else ''}"
                for label, keys in (("missing", missing), ("unexpected", unexpected),
                                    ("other shape (weights vs model)", mismatched)) if keys]
    if problems:
        raise CnnbenchError(f"the weights from {source} do not fit {type(model).__name__}: {'; '.join(problems)}")
    model.load_state_dict(state)


def torchvision_state_dict(weights, load: bool = True) -> dict[str, torch.Tensor] | None:
    """The state dict of a torchvision ``WeightsEnum`` member: from ``$TORCH_HOME/hub/checkpoints`` when
    cached, else downloaded there. Loaded with ``weights_only=True``; offline and uncached is one line. Without
    ``load``, only made sure to be in the cache (downloaded now if not)."""
    file = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    try:
        if not load:
            if not file.is_file():
                file.parent.mkdir(parents=True, exist_ok=True)
                torch.hub.download_url_to_file(weights.url, str(file), progress=False)
            return None
        return weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        raise CnnbenchError(f"pretrained weights {weights} are not cached at {file} and could not be downloaded "
                            f"({reason}); download {weights.url} to that path (TORCH_HOME moves it)") from None
    except Exception as e:  # a cached file that is not a plain state dict
        raise CnnbenchError(f"cannot read the cached weights {file}: {type(e).__name__}: "
                            f"{first_line(e)}; delete it to download again") from None
