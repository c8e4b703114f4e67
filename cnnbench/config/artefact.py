"""Configs read back from what runs wrote (checkpoints, ``.hydra/config.yaml``, results): data, never templates.

OmegaConf treats ``${...}`` in a string as an interpolation, and resolvers such as ``oc.env`` run code: a config
that anyone could have edited would read the environment (``${oc.env:SECRET_TOKEN}``) into a command's output.
cnnbench records configs resolved, so a recorded ``${`` is text; ``recorded_config`` keeps it text (escaped the
way OmegaConf escapes) and then holds the config to the schema's types and the command line's value checks.
"""

from __future__ import annotations

import re
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cnnbench.config.checks import check_values
from cnnbench.config.schema import Config
from cnnbench.errors import CnnbenchError, one_line

_INTERPOLATION = re.compile(r"(\\*)\$\{")


def literal(tree: Any) -> Any:
    """``tree`` (plain containers) with every ``${`` in its strings escaped, and the backslashes before it
    doubled, so that OmegaConf reads each string back exactly as it is."""
    if isinstance(tree, dict):
        return {key: literal(value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [literal(value) for value in tree]
    if isinstance(tree, str):
        return _INTERPOLATION.sub(lambda m: m.group(1) * 2 + "\\${", tree)
    return tree


def recorded_config(tree: Any, where: str) -> DictConfig:
    """A run's recorded config (``tree``: plain containers, as read from ``where``) as a DictConfig with no
    interpolation, typed by the schema (keys it lacks get their defaults) and checked as the command line is;
    anything else is one line naming ``where``."""
    if not isinstance(tree, dict):
        raise CnnbenchError(f"{where}: its recorded config is not a mapping; give a run that cnnbench wrote")
    try:
        typed = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.create(literal(tree)))
        check_values(typed)
        plain = OmegaConf.to_container(typed, resolve=False, enum_to_str=True)
    except (OmegaConfBaseException, CnnbenchError, TypeError, ValueError, AttributeError, KeyError) as e:
        key = getattr(e, "full_key", None)
        message = str(e) if isinstance(e, CnnbenchError) else f"{key + ': ' if key else ''}{one_line(e)}"
        raise CnnbenchError(f"{where}: its recorded config is malformed or not one cnnbench accepts ({message}); "
                            f"give a run that cnnbench wrote, unchanged") from None
    return OmegaConf.create(plain)
