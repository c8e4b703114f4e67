"""Hydra's sweep syntax as Optuna distributions: ``hydra.sweeper.params`` and the command line's sweeps.

``choice(a, b, c)`` (or ``a,b,c``) is categorical; ``range(start, stop[, step])`` an integer (or float) grid with
Python's exclusive stop; ``interval(low, high)`` a float range, an integer one with ``tag(int, ...)``; ``tag(log,
...)`` samples on a log scale. A plain ``key=value`` is fixed for every trial.
"""

from __future__ import annotations

import math
import re
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution


def distribution(override: Override) -> BaseDistribution:
    """The Optuna distribution of one sweep override (``override.is_sweep_override()``)."""
    value = override.value()
    log = "log" in value.tags
    if isinstance(value, ChoiceSweep):
        return CategoricalDistribution(value.list)
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        count = math.ceil((stop - start) / step)
        if count < 1:
            raise ValueError(f"{override.input_line}: the range is empty")
        last = start + (count - 1) * step
        if all(isinstance(v, int) for v in (start, stop, step)):
            return IntDistribution(start, last, log=log, step=1 if log else step)
        return FloatDistribution(start, last, log=log, step=None if log else step)
    if isinstance(value, IntervalSweep):
        if "int" in value.tags:
            return IntDistribution(int(value.start), int(value.end), log=log)
        return FloatDistribution(value.start, value.end, log=log)
    raise ValueError(f"{override.input_line}: not a sweep Optuna can sample (choice, range or interval)")


def search_space(params: dict[str, str] | None, arguments: list[str]) -> tuple[dict[str, BaseDistribution], list[str]]:
    """The distributions of ``params`` (the sweeper's) and of the command line's sweeps, and the command line's
    fixed overrides (unchanged, for every trial); a key swept both ways takes the command line's."""
    parser = OverridesParser.create()
    lines = [f"{key}={value}" for key, value in (params or {}).items()] + list(arguments)
    space: dict[str, BaseDistribution] = {}
    fixed: list[str] = []
    for override in parser.parse_overrides(lines):
        key = override.get_key_element()
        if override.is_sweep_override():
            space[key] = distribution(override)
        else:
            space.pop(key, None)
            fixed.append(override.input_line)
    return space, fixed


def as_override(key: str, value: Any) -> str:
    """``key=value`` as Hydra's command line reads it back (strings quoted where its grammar needs it)."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, str) and not re.fullmatch(r"[\w.\-/:+]+", value):
        text = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    else:
        text = str(value)
    return f"{key}={text}"
