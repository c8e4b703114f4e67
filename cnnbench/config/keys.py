"""Misspelt keys, in every group: refused in one line with the closest key the schema knows.

``cnnbench trainer.epoch=3`` fails in Hydra with a hint to append it (``+trainer.epoch=3``); appended, it would be
composed and ignored. Both are refused here, naming the closest known key (``trainer.epochs``). Only documented open
maps take new keys: ``model.kwargs`` (timm's keyword arguments) and the optimizer's keywords (its class's own
arguments, which it checks: ``cnnbench.engine.optim``).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cnnbench.config.schema import (
    OPTIMIZERS,
    SCHEDULERS,
    TRANSFERS,
    Config,
    DataConfig,
    LoggerConfig,
    SweepConfig,
    TrainerConfig,
    model_schema,
)
from cnnbench.errors import CnnbenchError

OPEN_MAPS = ("model.kwargs",)  # maps whose keys are the user's
KEYWORD_GROUPS = ("optimizer",)  # groups that take extra keywords, checked by what they build
FIXED = {"data": DataConfig, "trainer": TrainerConfig, "logger": LoggerConfig, "sweep": SweepConfig}


def _fields(schema: Any, prefix: str) -> list[str]:
    """The dotted keys of a dataclass, nested dataclasses included."""
    keys = []
    for f in dataclasses.fields(schema):
        keys.append(f"{prefix}.{f.name}")
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            keys += _fields(type(default), f"{prefix}.{f.name}")
    return keys


def known_keys() -> list[str]:
    """Every key of the schema: the fixed groups' and, for the open groups, every option's."""
    from cnnbench.config.model_options import MODEL_OPTIONS

    keys = [f.name for f in dataclasses.fields(Config)]
    for group, schema in FIXED.items():
        keys += _fields(schema, group)
    for group, options in (("scheduler", SCHEDULERS), ("transfer", TRANSFERS), ("optimizer", OPTIMIZERS)):
        for option in options.values():
            keys += _fields(option, group)
    for name, options in MODEL_OPTIONS.items():
        keys += _fields(model_schema(name, options), "model")
    return sorted(set(keys))


def misspelt(key: str, known: list[str] | None = None) -> CnnbenchError:
    """The error for ``key``, which the schema does not know: the closest known keys of its group."""
    known = known_keys() if known is None else known
    group, _, name = key.rpartition(".")
    siblings = [k for k in known if k.rpartition(".")[0] == group]
    close = closest(name, [k.rpartition(".")[2] for k in siblings])
    close = f"{group}.{close}" if close and group else close or next(iter(difflib.get_close_matches(
        key, known, n=1, cutoff=0.8)), None)
    where = f"a key of {group}" if group else "a key of the config"
    hint = f"did you mean {close}?" if close else (
        f"its keys: {', '.join(k.rsplit('.', 1)[-1] for k in siblings[:12])}{', ...' if len(siblings) > 12 else ''}")
    return CnnbenchError(f"{key} is not {where}; {hint}")


def closest(name: str, names: list[str]) -> str | None:
    """The name ``name`` most likely misspells: one it begins (``skip`` for ``skip_completed``), else the most
    similar."""
    begun = [n for n in names if n.startswith(name) and len(name) >= 3]
    return min(begun, key=len) if begun else next(iter(difflib.get_close_matches(name, names, n=1, cutoff=0.6)),
                                                  None)


def check_keys(cfg: DictConfig) -> None:
    """Refuse a key that the schema of its node does not have (keys appended with ``+`` reach the composed
    config), naming the closest known one."""
    for group in cfg:
        node = cfg._get_node(group)
        if isinstance(node, DictConfig):
            _walk(node, str(group))
    extra = [k for k in cfg if k not in {f.name for f in dataclasses.fields(Config)}]
    if extra:
        raise misspelt(str(extra[0]))


def _walk(node: DictConfig, path: str) -> None:
    schema = OmegaConf.get_type(node)
    if path in OPEN_MAPS or not dataclasses.is_dataclass(schema):
        return
    allowed = {f.name for f in dataclasses.fields(schema)}
    for key in node:
        full = f"{path}.{key}"
        if key not in allowed and path not in KEYWORD_GROUPS:
            raise misspelt(full, known=sorted({*known_keys(), *(f"{path}.{a}" for a in allowed)}))
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            _walk(child, full)


def explain_override_error(error: Exception, overrides: list[str]) -> CnnbenchError | None:
    """Hydra's error for an override of a key that does not exist ("Could not override 'trainer.epoch'. To append
    to your config use +trainer.epoch=3"), as cnnbench's: the closest key of the group's chosen option (from
    ``overrides``, else the default), no hint to append."""
    found = re.search(r"Could not override '([^']+)'", str(error))
    if found is None or "To append to your config" not in str(error):
        return None
    key = found.group(1)
    group = key.split(".", 1)[0]
    schema = option_schema(group, overrides)
    return misspelt(key, known=_fields(schema, group) if schema is not None else None)


def option_schema(group: str, overrides: list[str]) -> Any:
    """The schema of the option an open group (model, optimizer, scheduler, transfer) takes in a command with
    ``overrides``: the one given (``model=vgg16``), else conf/config.yaml's default; None for other groups."""
    from importlib.resources import files

    from cnnbench.config.model_options import MODEL_OPTIONS

    options = {"scheduler": SCHEDULERS, "transfer": TRANSFERS, "optimizer": OPTIMIZERS}.get(group)
    if options is None and group != "model":
        return None
    given = [o.split("=", 1)[1] for o in overrides if o.lstrip("+~").startswith(f"{group}=")]
    if not given:
        defaults = OmegaConf.create((files("cnnbench.conf") / "config.yaml").read_text()).defaults
        given = [d[group] for d in defaults if isinstance(d, DictConfig) and group in d]
    choice = given[-1] if given else None
    if group == "model":
        return model_schema(choice, MODEL_OPTIONS[choice]) if choice in MODEL_OPTIONS else None
    return options.get(choice)
