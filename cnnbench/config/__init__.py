"""Configs: the schema every composed config is typed by (``schema``), the builders' options it is made of
(``model_options``, generated) and the value checks run before anything is built (``checks``)."""

from cnnbench.config.checks import check_device, to_container, validate
from cnnbench.config.schema import PAD_MODES, AugmentConfig, register_configs

__all__ = ["PAD_MODES", "AugmentConfig", "check_device", "register_configs", "to_container", "validate"]
