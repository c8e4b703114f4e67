"""The command-line overrides of the running Hydra job, and what they set."""

from __future__ import annotations

IGNORED_KEYS = ("sweep.", "hydra.", "logger.")  # overrides that do not change what is trained


def parse_overrides(overrides: list[str] | None) -> dict[str, str]:
    """``["a.b=1", "+c=x"]`` -> ``{"a.b": "1", "c": "x"}``, leaving out keys that do not change the training."""
    out = {}
    for o in overrides or []:
        key, _, value = o.lstrip("+~").partition("=")
        if not key.startswith(IGNORED_KEYS):
            out[key] = value
    return out


def hydra_overrides() -> list[str]:
    """The overrides of the running Hydra job; [] when not under Hydra (called from Python)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:
        return []
