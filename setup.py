"""Package discovery: every package under cnnbench/, plus the top-level conf/ shipped as ``cnnbench.conf``
(Hydra reads it as ``pkg://cnnbench.conf``). The rest of the metadata is in pyproject.toml."""

from setuptools import find_namespace_packages, find_packages, setup

setup(packages=find_packages(include=["cnnbench", "cnnbench.*"])
      + ["cnnbench.conf"] + [f"cnnbench.conf.{p}" for p in find_namespace_packages(where="conf")])
