"""The README and docs say what is: every relative link resolves (files and section anchors), every command in
the README's code blocks parses with the keys it names, and the README stays under 3000 words."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
from conftest import ROOT, compose_config
from hydra.core.override_parser.overrides_parser import OverridesParser

from cnnbench.config.checks import check_schema_keys

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    slugs = set()
    for line in page.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            slugs.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return slugs


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(target)
    assert broken == []


def readme_commands() -> list[list[str]]:
    """The commands of the README's bash blocks: comments dropped, ``<placeholders>`` as a word."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line.strip())
            if line.startswith("cnnbench"):  # ($HOME as the shell expands it)
                commands.append(shlex.split(os.path.expandvars(re.sub(r"<[^>]*>", "X", line))))
    return commands


def test_every_readme_command_parses_with_keys_that_exist() -> None:
    """`cnnbench ...` lines compose (a sweep's first values) and pass the key checks; the other commands' keys
    are ones their usage names."""
    from cnnbench.commands import evaluate, export, predict, visualize

    usages = {"cnnbench-eval": evaluate.USAGE, "cnnbench-export": export.USAGE, "cnnbench-predict": predict.USAGE,
              "cnnbench-visualize": visualize.USAGE}
    commands = readme_commands()
    assert len(commands) > 15
    parser = OverridesParser.create()
    for command in commands:
        name, *args = command
        if name == "cnnbench":
            overrides = [a for a in args if a not in ("-m", "--multirun") and not a.startswith("hydra")]
            parsed = parser.parse_overrides(overrides)  # Hydra's grammar, sweeps included
            first = [f"{o.input_line.split('=', 1)[0]}={o.sweep_string_iterator().__next__()}"
                     if o.is_sweep_override() else o.input_line for o in parsed]
            check_schema_keys(compose_config(*first))
        elif name in usages:
            for arg in args:
                assert "=" in arg and f"{arg.split('=', 1)[0]}=" in usages[name], (command, arg)


def test_the_readme_stays_under_3000_words() -> None:
    assert len((ROOT / "README.md").read_text().split()) <= 3000
