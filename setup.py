"""Package discovery: every package under cnnbench/, the top-level conf/ shipped as ``cnnbench.conf`` (Hydra
reads it as ``pkg://cnnbench.conf``), and cnnbench's Hydra plugins (Hydra finds plugins only in the
``hydra_plugins`` namespace). The rest of the metadata is in pyproject.toml."""

from setuptools import find_namespace_packages, find_packages, setup

setup(packages=find_packages(include=["cnnbench", "cnnbench.*"])
      + ["cnnbench.conf"] + [f"cnnbench.conf.{p}" for p in find_namespace_packages(where="conf")]
      + find_namespace_packages(include=["hydra_plugins.cnnbench_*"]))
