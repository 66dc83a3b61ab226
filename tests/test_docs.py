"""The README and docs/ stay true to the code: every relative link and every ``results/...``
path they name exists, and every command in their code blocks composes (the Hydra overrides
resolve against today's configs, the make target exists, the study's options parse)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser

from lnl_lightning.config import CONFIG_MODULE

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
RESULTS_PATH = re.compile(r"(?<![\w/.])results/[\w.+\-/<>]*[\w+\-/>]")
CODE = re.compile(r"```(?:bash|sh|shell|console)\n(.*?)```", re.S)
PYTHONS = ("python", "python3", ".venv/bin/python")
# the CLIs whose command lines are Hydra overrides, and the config each composes
HYDRA_CLIS = {"lnl_lightning": "train", "lnl_lightning.eval": "eval"}
PLACEHOLDER = re.compile(r"[<>]|\.\.\.|\$(?!\{)")  # <folder>, ..., a shell variable


def page_id(page: Path) -> str:
    return str(page.relative_to(REPO))


def links(page: Path) -> list[str]:
    targets = [m.group(1) for m in LINK.finditer(page.read_text())]
    return [t for t in targets if not re.match(r"[a-z]+:|#", t)]


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_relative_link_exists(page):
    missing = [t for t in links(page) if not (page.parent / t.split("#")[0]).exists()]
    assert not missing, f"{page_id(page)} links to files that do not exist: {missing}"


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the page's headings (lower case, punctuation dropped)."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_link_to_a_heading_finds_it(page):
    missing = []
    for target in [t for t in links(page) if "#" in t] + [
        m.group(1) for m in LINK.finditer(page.read_text()) if m.group(1).startswith("#")
    ]:
        path, _, anchor = target.partition("#")
        linked = page.parent / path if path else page
        if linked.suffix == ".md" and anchor not in anchors(linked):
            missing.append(target)
    assert not missing, f"{page_id(page)} links to headings that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_results_path_named_exists(page):
    named = {m.group(0).rstrip(".") for m in RESULTS_PATH.finditer(page.read_text())}
    missing = sorted(p for p in named if not PLACEHOLDER.search(p) and not (REPO / p).exists())
    assert not missing, f"{page_id(page)} names results that do not exist: {missing}"


# a file of the repository named in the text (the code, its tests, configs, scripts)
CODE_PATH = re.compile(r"(?<![\w/.])(?:lnl_lightning|tests|conf|benchmarks|\.ci)/[\w.+\-/]*\w")
AT_COMMIT = re.compile(r"commit\s+`[0-9a-f]{7,40}`")


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_file_of_the_code_named_exists_or_is_dated(page):
    """A file named in the text exists today, or the text around it names the commit it is
    of (history: "benchmarks/gpu_check.sh as of commit `fb490f3`")."""
    text = page.read_text()
    missing = sorted(
        {
            m.group(0)
            for m in CODE_PATH.finditer(text)
            if not (REPO / m.group(0)).exists()
            and not AT_COMMIT.search(text[max(0, m.start() - 200) : m.end() + 200])
        }
    )
    assert not missing, f"{page_id(page)} names files that do not exist: {missing}"


def commands(page: Path) -> list[list[str]]:
    """Each shell command of the page's code blocks, as words (continuations joined, comments
    dropped, ``a && b`` and ``a; b`` split)."""
    found = []
    for block in CODE.findall(page.read_text()):
        text = re.sub(r"\\\n\s*", " ", block)
        for line in text.splitlines():
            for part in re.split(r"&&|;|\|\|?", line):
                try:
                    words = shlex.split(part, comments=True)
                except ValueError:  # an unbalanced quote across parts: not a command we check
                    continue
                if words:
                    found.append(words)
    return found


def python_module(words: list[str]) -> tuple[str, list[str]] | None:
    """``(module, arguments)`` of a ``python -m module ...`` command."""
    for i, word in enumerate(words[:-2]):
        if word.endswith(PYTHONS) and words[i + 1] == "-m":
            return words[i + 2], words[i + 3 :]
    return None


def first_values(arguments: list[str]) -> list[str]:
    """The overrides of a command line, a sweep's first value standing for its sweep."""
    given = [a for a in arguments if "=" in a and not a.startswith("-")]
    given = [a for a in given if not PLACEHOLDER.search(a)]
    parsed = OverridesParser.create().parse_overrides(given)
    result = []
    for override in parsed:
        key = override.get_key_element()
        if override.is_sweep_override():
            value = next(override.sweep_string_iterator())
        else:
            value = override.get_value_element_as_str()
        result.append(f"{key}={value}")
    return result


def hydra_commands() -> list[tuple[str, str, list[str]]]:
    found = []
    for page in PAGES:
        for words in commands(page):
            call = python_module(words)
            if call and call[0] in HYDRA_CLIS:
                found.append((page_id(page), call[0], call[1]))
    return found


@pytest.mark.parametrize(
    ("page", "module", "arguments"),
    hydra_commands(),
    ids=lambda v: v if isinstance(v, str) else " ".join(v)[:80],
)
def test_every_hydra_command_composes(page, module, arguments):
    overrides = first_values(arguments)
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        compose(HYDRA_CLIS[module], overrides=overrides, return_hydra_config=True)


def make_targets() -> set[str]:
    makefile = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([a-zA-Z_-]+):", makefile, re.M))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_make_target_named_exists(page):
    targets = make_targets()
    named = [
        w[w.index("make") + 1]
        for w in commands(page)
        if "make" in w and w.index("make") + 1 < len(w)
    ]
    named = [n for n in named if not n.startswith("-") and "=" not in n]
    missing = sorted(set(named) - targets)
    assert not missing, f"{page_id(page)} runs make targets that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_study_command_parses(page):
    from lnl_lightning.study.protocols import parse

    for words in commands(page):
        call = python_module(words)
        if call and call[0] == "lnl_lightning.study":
            arguments = [a for a in call[1] if not PLACEHOLDER.search(a)]
            parse(arguments)  # an unknown option or method exits here
