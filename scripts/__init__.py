"""Scripts beside the package, sorted by purpose; run them from the project root as modules
(``python -m scripts.bench.throughput``), never installed with the wheel.

- ``bench/``: speed measured (throughput and MFU, decoding, threads per process, host memory).
- ``compare/``: cnnbench beside peers' own code or recipes (airbench94, the modern recipe, the speedrun's seeds).
- ``docs/``: what regenerates the docs' figures and tables (demos on real data, screenshots, model tables).
- ``checks/``: replays and checks run by hand (a newcomer's first hour, the GPU check script).
- ``dev/``: code generated for the package (``cnnbench/config/model_options.py``).
- ``runs.py``: what they share: the real data sets unpacked, ``cnnbench`` run as a user types it.
"""
