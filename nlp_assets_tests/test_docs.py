"""README.md and docs/*.md checked against the code (docs/tests.md "The docs test").

Every page is read as its author wrote it; a failure names the file, the line and what is
missing:
- `make <target>`: a target of the Makefile;
- `python -m <module>` (and `dagster ... -m <module>`): a module importlib finds;
- `nlp <command>` (and `nlp keys <action>`): a subcommand of the CLI's argparse parser;
- `pytest -m <expr>`: markers registered in pyproject.toml;
- `dg <group> <command>`: a command of the dg CLI;
- a relative link: an existing file, and an anchor: a heading of the linked page;
- docs/settings.md: every variable in its tables is read by the package (or by the instance's
  dagster.yaml), and every `NLP_*` name in the package's source is in its tables;
- every `NLP_*` variable named anywhere in the docs is read by the package;
- README.md has at most 200 lines.

Commands are looked for in fenced code blocks (comments dropped) and in inline code spans, so
the English word "make" in prose is not a command.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import re
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from nlp_assets.conventions import parse_python

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SETTINGS_PAGE = ROOT / "docs" / "settings.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
DOC_IDS = [str(p.relative_to(ROOT)) for p in DOCS]
README_MAX_LINES = 200

#: The package's source: the code location and the two folders it links in as
#: nlp_assets.resources and nlp_assets.sensors (read once, not through the links).
PACKAGE_DIRS = ("nlp_assets", "resources", "sensors")
#: Dagster instance configs: `{env: NAME}` there is read by Dagster itself.
INSTANCE_CONFIGS = ("dagster.yaml", "deploy/dagster.yaml")

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`([^`]+)`", re.DOTALL)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# A command word at the start of a command: line or span start, after a pipe, `;`, `&&` or
# `$(`, optionally behind a path (`.venv/bin/nlp`).
CMD_START = r"(?:^|(?<=\$\()|(?<=[|;&])\s*)\s*(?:[\w.-]*/)*"
MAKE = re.compile(CMD_START + r"make\s+(?P<args>[^\n#`]*)", re.MULTILINE)
PYTHON_M = re.compile(r"\bpython[\d.]*\s+-m\s+(?P<module>[\w.]+)")
DAGSTER_M = re.compile(r"\bdagster\b[^\n|;]*?\s-m\s+(?P<module>[\w.]+)")
NLP_CMD = re.compile(
    CMD_START + r"nlp\s+(?P<cmd>[a-z][\w-]*)(?:\s+(?P<sub>[a-z][\w|-]*))?", re.MULTILINE
)
DG_CMD = re.compile(
    CMD_START + r"dg\s+(?P<cmd>[a-z][\w-]*)(?:\s+(?P<sub>[a-z][\w-]*))?", re.MULTILINE
)
PYTEST_M = re.compile(r"\bpytest\b[^\n|;]*?\s-m\s+(?P<expr>\"[^\"]+\"|'[^']+'|[\w-]+)")
NLP_VAR = re.compile(r"\bNLP_[A-Z0-9_]*[A-Z0-9]\b")
VAR_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")


# --- reading pages -------------------------------------------------------------------------


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


@cache
def _split(path: Path) -> tuple[str, str]:
    """(code, prose): the page twice, same line numbers. `code` keeps only fenced blocks
    (comments after ` #` dropped), `prose` only the text outside them."""
    code, prose, fenced = [], [], False
    for line in _lines(path):
        if FENCE.match(line):
            fenced = not fenced
            code.append("")
            prose.append("")
        elif fenced:
            code.append(re.sub(r"(^|\s)#.*$", "", line))
            prose.append("")
        else:
            code.append("")
            prose.append(line)
    return "\n".join(code), "\n".join(prose)


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def snippets(path: Path) -> Iterator[tuple[int, str]]:
    """(line, text) of every fenced line and every inline code span of the page."""
    code, prose = _split(path)
    for number, line in enumerate(code.splitlines(), start=1):
        if line.strip():
            yield number, line
    for match in INLINE_CODE.finditer(prose):
        yield _line_of(prose, match.start()), " ".join(match.group(1).split())


def where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


# --- what the code has ---------------------------------------------------------------------


@cache
def make_targets() -> frozenset[str]:
    targets: set[str] = set()
    for line in (ROOT / "Makefile").read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9_.][A-Za-z0-9_. -]*?)\s*::?(?!=)", line)
        if match:
            targets.update(t for t in match.group(1).split() if not t.startswith("."))
        if line.startswith(".PHONY:"):
            targets.update(line.split(":", 1)[1].split())
    return frozenset(targets)


@cache
def cli_commands() -> dict[str, frozenset[str]]:
    """The `nlp` CLI's subcommands, each with its own subcommands (empty when it has none)."""
    from nlp_assets.client.cli import build_parser

    def choices(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                return dict(action.choices)
        return {}

    return {name: frozenset(choices(sub)) for name, sub in choices(build_parser()).items()}


@cache
def pytest_markers() -> frozenset[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    markers = config["tool"]["pytest"]["ini_options"]["markers"]
    return frozenset(m.split(":", 1)[0].strip() for m in markers)


@cache
def dg_commands() -> dict[str, frozenset[str]]:
    """dg's commands and their subcommands (dagster-dg-cli is a dev dependency)."""
    import click
    from dagster_dg_cli.cli import cli

    context = click.Context(cli)
    commands: dict[str, frozenset[str]] = {}
    for name in cli.list_commands(context):
        command = cli.get_command(context, name)
        subs = (
            command.list_commands(click.Context(command))
            if isinstance(command, click.Group)
            else []
        )
        commands[name] = frozenset(subs)
    return commands


def _package_files() -> Iterator[Path]:
    for folder in PACKAGE_DIRS:
        yield from sorted((ROOT / folder).rglob("*.py"))


@cache
def package_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in _package_files())


@cache
def instance_config_env() -> frozenset[str]:
    names: set[str] = set()
    for name in INSTANCE_CONFIGS:
        text = (ROOT / name).read_text(encoding="utf-8")
        names.update(re.findall(r"\{\s*env:\s*([A-Z][A-Z0-9_]*)\s*\}", text))
    return frozenset(names)


@cache
def nlp_variables_in_code() -> dict[str, str]:
    """Every `NLP_*` name the package's source holds as a whole string literal (what
    `os.getenv`, `os.environ`, `dg.EnvVar` and the settings helpers are given), with the first
    file that holds it."""
    found: dict[str, str] = {}
    for path in _package_files():
        tree = parse_python(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and re.fullmatch(r"NLP_[A-Z0-9_]+", node.value)
            ):
                found.setdefault(node.value, str(path.relative_to(ROOT)))
    return found


def is_read_by_package(name: str) -> bool:
    return bool(re.search(rf"(?<![A-Z0-9_]){name}(?![A-Z0-9_])", package_text()))


# --- markdown anchors ----------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: markup dropped, lower case, punctuation removed, spaces
    to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links keep their text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    _, prose = _split(path)
    seen: dict[str, int] = {}
    result: set[str] = set()
    for line in prose.splitlines():
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return frozenset(result)


# --- the tests -----------------------------------------------------------------------------


def test_pages_are_found():
    names = {p.name for p in DOCS}
    assert {"README.md", "settings.md", "kafka.md", "tests.md"} <= names, names


def test_readme_is_a_front_page():
    lines = _lines(README)
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines, at most {README_MAX_LINES}: move detail to docs/"
    )


@pytest.mark.parametrize("page", DOCS, ids=DOC_IDS)
def test_make_targets_exist(page: Path):
    targets = make_targets()
    missing = []
    for line, text in snippets(page):
        for match in MAKE.finditer(text):
            for word in match.group("args").split():
                if "=" in word or word.startswith("-"):
                    continue  # a variable (make run NLP_DEVICE=cuda) or an option
                if not re.fullmatch(r"[a-z][\w.-]*", word):
                    break
                if word not in targets:
                    missing.append(f"{where(page, line)}: `make {word}`: no such Makefile target")
    assert not missing, "\n".join(missing) + f"\nMakefile targets: {sorted(targets)}"


@pytest.mark.parametrize("page", DOCS, ids=DOC_IDS)
def test_python_modules_exist(page: Path):
    missing = []
    for line, text in snippets(page):
        modules = [m.group("module") for m in PYTHON_M.finditer(text)]
        modules += [m.group("module") for m in DAGSTER_M.finditer(text)]
        for module in modules:
            try:
                found = importlib.util.find_spec(module) is not None
            except ModuleNotFoundError:
                found = False
            if not found:
                missing.append(f"{where(page, line)}: `-m {module}`: no such module")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("page", DOCS, ids=DOC_IDS)
def test_nlp_cli_commands_exist(page: Path):
    commands = cli_commands()
    missing = []
    for line, text in snippets(page):
        for match in NLP_CMD.finditer(text):
            cmd, sub = match.group("cmd"), match.group("sub")
            if cmd not in commands:
                missing.append(
                    f"{where(page, line)}: `nlp {cmd}`: not a command of the CLI "
                    f"(nlp_assets/client/cli.py has {sorted(commands)})"
                )
            elif commands[cmd] and sub:
                for action in sub.split("|"):
                    if action not in commands[cmd]:
                        missing.append(
                            f"{where(page, line)}: `nlp {cmd} {action}`: not an action of "
                            f"`nlp {cmd}` ({sorted(commands[cmd])})"
                        )
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("page", DOCS, ids=DOC_IDS)
def test_pytest_markers_exist(page: Path):
    markers = pytest_markers()
    missing = []
    for line, text in snippets(page):
        for match in PYTEST_M.finditer(text):
            expression = match.group("expr").strip("\"'")
            for word in re.findall(r"[A-Za-z_][\w-]*", expression):
                if word not in {"and", "or", "not"} and word not in markers:
                    missing.append(
                        f"{where(page, line)}: `pytest -m {expression}`: marker {word!r} is "
                        f"not registered in pyproject.toml ({sorted(markers)})"
                    )
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("page", DOCS, ids=DOC_IDS)
def test_dg_commands_exist(page: Path):
    found = [(line, m) for line, text in snippets(page) for m in DG_CMD.finditer(text)]
    if not found:
        return
    commands = dg_commands()
    missing = []
    for line, match in found:
        cmd, sub = match.group("cmd"), match.group("sub")
        if cmd not in commands:
            missing.append(f"{where(page, line)}: `dg {cmd}`: not a dg command")
        elif commands[cmd] and sub and sub not in commands[cmd]:
            missing.append(
                f"{where(page, line)}: `dg {cmd} {sub}`: not one of {sorted(commands[cmd])}"
            )
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("page", DOCS, ids=DOC_IDS)
def test_relative_links_resolve(page: Path):
    _, prose = _split(page)
    text = INLINE_CODE.sub(lambda m: " " * len(m.group(0)), prose)  # links in code are code
    missing = []
    for match in LINK.finditer(text):
        target = match.group(1)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        line = _line_of(text, match.start())
        file_part, _, anchor = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        if not linked.exists():
            missing.append(f"{where(page, line)}: link to {target}: {file_part} does not exist")
            continue
        if anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            missing.append(
                f"{where(page, line)}: link to {target}: {linked.relative_to(ROOT)} has no "
                f"heading #{anchor} (it has {sorted(anchors(linked))})"
            )
    assert not missing, "\n".join(missing)


def settings_table_variables() -> dict[str, int]:
    """Variables named in the first column of docs/settings.md's tables, with their line."""
    names: dict[str, int] = {}
    for number, line in enumerate(_lines(SETTINGS_PAGE), start=1):
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        first = line.split("|")[1]
        for name in re.findall(r"`([^`]+)`", first):
            if VAR_NAME.fullmatch(name):
                names.setdefault(name, number)
    return names


def test_settings_page_lists_variables_the_code_reads():
    table = settings_table_variables()
    assert len(table) > 20, f"docs/settings.md: found only {sorted(table)} in its tables"
    stale = [
        f"{where(SETTINGS_PAGE, line)}: {name} is not read by the package "
        f"({', '.join(PACKAGE_DIRS)}) nor by {', '.join(INSTANCE_CONFIGS)}"
        for name, line in table.items()
        if not is_read_by_package(name) and name not in instance_config_env()
    ]
    assert not stale, "\n".join(stale)


def test_every_nlp_variable_in_the_code_is_on_the_settings_page():
    table = settings_table_variables()
    missing = [
        f"{name} (read in {path}) is not in a table of docs/settings.md"
        for name, path in sorted(nlp_variables_in_code().items())
        if name not in table
    ]
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("page", DOCS, ids=DOC_IDS)
def test_nlp_variables_named_in_docs_are_read(page: Path):
    stale = []
    for number, line in enumerate(_lines(page), start=1):
        for name in NLP_VAR.findall(line):
            if not is_read_by_package(name):
                stale.append(f"{where(page, number)}: {name} is not read by the package")
    assert not stale, "\n".join(sorted(set(stale)))
