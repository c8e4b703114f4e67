"""The plugin class of cnnbench's Optuna sweeper; its logic is in ``_impl`` (imported when a sweep starts, so the
plugin scan at every start-up does not import Optuna)."""

from __future__ import annotations

from typing import Any

try:  # (cnnbench[sweeps]; without it there is no plugin, and Hydra's scan passes this module by)
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
except ImportError:
    OptunaSweeper = None

if OptunaSweeper is not None:

    class SharedStudySweeper(OptunaSweeper):
        """hydra-optuna-sweeper's ``OptunaSweeper`` with ``n_trials`` counted over the study (``_impl``)."""

        def __init__(self, **kwargs: Any) -> None:  # (the same keys: hydra-optuna-sweeper's OptunaSweeperConf)
            from hydra_plugins.cnnbench_sweeper._impl import SharedStudyImpl

            self.sweeper = SharedStudyImpl(**kwargs)
