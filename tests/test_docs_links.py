"""Every reference in the repository points at something a reader can open.

- A ``docs/….md`` reference in the code, the tests, the benchmarks, the docs or the README names a
  file that exists, and its ``#anchor``, if any, exists in that file (an explicit
  ``<a id="…">`` or a heading).
- Relative Markdown links in the docs and the README resolve the same way.
- Test and source paths cited in the docs (``tests/….py::test_name``, ``src/….py``) exist, and so
  do the modules named in the protocol, pitfalls and architecture pages.
- Nothing cites documents that live outside the repository, or speaks of them.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SCANNED_DIRS = ("src", "tests", "docs", "benchmarks")
TEXT_SUFFIXES = {".py", ".md", ".html", ".js", ".css", ".toml", ".txt", ".dot", ".svg", ".ini"}

# References to a doc from anywhere: "docs/pitfalls.md#pitfall-invalid-client".
DOC_REFERENCE = re.compile(r"(?<![\w/.-])docs/([\w.-]+\.md)(#[\w-]+)?")
# Relative Markdown links and reference definitions in .md files.
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)|^\[[^\]]+\]:\s*(\S+)", re.MULTILINE)
EXPLICIT_ANCHOR = re.compile(r"""<a\s+(?:id|name)=["']([\w-]+)["']""")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
TEST_REFERENCE = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`")
SOURCE_REFERENCE = re.compile(r"`(src/appleconnect/[\w/]*[\w]+(?:\.py)?/?)`")
MODULE_REFERENCE = re.compile(r"`(appleconnect(?:\.[a-z_][a-z0-9_]*)+)`")
# Pages whose module names must match the tree (the others may speak of planned modules).
MODULE_CHECKED_PAGES = ("apple-protocol.md", "pitfalls.md", "architecture.md")

# Built from parts so that this file does not trip its own check.
FORBIDDEN_PHRASES = (
    "field" + " notes",
    "field" + "-notes",
    "the " + "seed",
    "../" + "shared",
    "apple-rest-" + "api.md",
)
FORBIDDEN_PATTERNS = (
    # Numbered pitfalls (P1, P13) of a document that is not in the repository.
    re.compile(r"\bP(?:[1-9]|1[0-9])\b"),
    # Paths of a developer's machine.
    re.compile(r"(?<![\w.])/work/"),
    # A doc cited by a section's title ('docs/service.md, "Accounts"'): cite the anchor
    # ('docs/service.md#accounts'), which the tests above check.
    re.compile(r'docs/[\w.-]+\.md,\s*(?:[#*]\s*)?"'),
)


def _scanned_files() -> Iterator[Path]:
    yield ROOT / "README.md"
    for name in SCANNED_DIRS:
        for path in sorted((ROOT / name).rglob("*")):
            if path.is_file() and path.suffix in TEXT_SUFFIXES:
                yield path


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"<[^>]+>", "", heading).replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def _anchors(path: Path) -> frozenset[str]:
    text = path.read_text(encoding="utf-8")
    explicit = set(EXPLICIT_ANCHOR.findall(text))
    headings = {_slug(h) for h in HEADING.findall(text)}
    return frozenset(explicit | headings)


def _problem(target: Path, anchor: str | None) -> str | None:
    if not target.is_file():
        shown = target.relative_to(ROOT) if target.is_relative_to(ROOT) else target
        return f"{shown} does not exist"
    if anchor and anchor not in _anchors(target):
        return f"{target.relative_to(ROOT)} has no anchor #{anchor}"
    return None


def _where(path: Path, text: str, offset: int) -> str:
    return f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, offset) + 1}"


def test_doc_references_point_at_existing_files_and_anchors() -> None:
    problems = []
    for path in _scanned_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in DOC_REFERENCE.finditer(text):
            anchor = match.group(2)[1:] if match.group(2) else None
            problem = _problem(DOCS / match.group(1), anchor)
            if problem:
                problems.append(f"{_where(path, text, match.start())}: {problem}")
    assert problems == []


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def test_relative_markdown_links_resolve() -> None:
    problems = []
    for path in _markdown_files():
        text = path.read_text(encoding="utf-8")
        for match in MARKDOWN_LINK.finditer(text):
            link = match.group(1) or match.group(2)
            if re.match(r"[a-z][a-z0-9+.-]*:", link):  # https:, mailto:
                continue
            target_text, _, anchor = link.partition("#")
            target = (path.parent / target_text).resolve() if target_text else path
            if not target_text.endswith(".md") and target_text:
                if not target.exists():
                    problems.append(f"{_where(path, text, match.start())}: {link} does not exist")
                continue
            problem = _problem(target, anchor or None)
            if problem:
                problems.append(f"{_where(path, text, match.start())}: {problem}")
    assert problems == []


def _defines(path: Path, name: str) -> bool:
    pattern = re.compile(rf"^\s*(?:async\s+)?def {re.escape(name)}\(", re.MULTILINE)
    return bool(pattern.search(path.read_text(encoding="utf-8")))


def test_cited_tests_and_source_files_exist() -> None:
    problems = []
    for path in _markdown_files():
        text = path.read_text(encoding="utf-8")
        for match in TEST_REFERENCE.finditer(text):
            file, name = ROOT / match.group(1), match.group(2)
            where = _where(path, text, match.start())
            if not file.is_file():
                problems.append(f"{where}: {match.group(1)} does not exist")
            elif name and not _defines(file, name):
                problems.append(f"{where}: {match.group(1)} defines no {name}")
        for match in SOURCE_REFERENCE.finditer(text):
            if not (ROOT / match.group(1)).exists():
                problems.append(f"{_where(path, text, match.start())}: {match.group(1)} is missing")
    assert problems == []


def _module_file(dotted: str) -> Path | None:
    base = ROOT / "src" / Path(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _names_module_or_attribute(dotted: str) -> bool:
    """``appleconnect.server.signin`` (a module) or ``appleconnect.server.signin.Service`` (a
    name defined or imported in that module)."""
    if _module_file(dotted):
        return True
    parent, _, name = dotted.rpartition(".")
    module = _module_file(parent)
    if module is None:
        return False
    definitions = (
        rf"^\s*(?:(?:async\s+)?def|class)\s+{name}\b",  # def name / class name
        rf"^{name}\s*[:=]",  # name = … at module level
        rf"\bimport\b.*\b{name}\b",  # from x import name
        rf"[\"']{name}[\"']",  # listed in __all__
    )
    pattern = "|".join(definitions)
    return bool(re.search(pattern, module.read_text(encoding="utf-8"), re.MULTILINE))


def test_modules_named_in_the_reference_pages_exist() -> None:
    problems = []
    for name in MODULE_CHECKED_PAGES:
        path = DOCS / name
        if not path.is_file():
            problems.append(f"docs/{name} is missing")
            continue
        text = path.read_text(encoding="utf-8")
        for match in MODULE_REFERENCE.finditer(text):
            if not _names_module_or_attribute(match.group(1)):
                problems.append(f"{_where(path, text, match.start())}: no module {match.group(1)}")
    assert problems == []


@pytest.mark.parametrize("phrase", FORBIDDEN_PHRASES)
def test_nothing_cites_documents_outside_the_repository(phrase: str) -> None:
    hits = []
    for path in _scanned_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in re.finditer(re.escape(phrase), text, re.IGNORECASE):
            hits.append(_where(path, text, match.start()))
    assert hits == [], f"{phrase!r} appears in the repository"


@pytest.mark.parametrize(
    "pattern", FORBIDDEN_PATTERNS, ids=["numbered-pitfall", "machine-path", "title-citation"]
)
def test_no_numbered_pitfalls_or_machine_paths(pattern: re.Pattern[str]) -> None:
    hits = []
    for path in _scanned_files():
        if path == Path(__file__).resolve():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        hits += [_where(path, text, m.start()) for m in pattern.finditer(text)]
    assert hits == []


def test_the_checks_see_what_they_check() -> None:
    """The scanners find references where there are some (a check that finds nothing proves
    nothing)."""
    protocol = (DOCS / "apple-protocol.md").read_text(encoding="utf-8")
    assert "quirk-email-verified-string" in _anchors(DOCS / "apple-protocol.md")
    assert "the-identity-token" in _anchors(DOCS / "apple-protocol.md")
    assert TEST_REFERENCE.search(protocol)
    assert _slug("`GET /auth/keys`") == "get-authkeys"
    assert _problem(DOCS / "pitfalls.md", "no-such-anchor") is not None
    assert _problem(DOCS / "no-such-page.md", None) is not None
    assert _names_module_or_attribute("appleconnect.buttons")
    assert _names_module_or_attribute("appleconnect.ClientSecret")
    assert not _names_module_or_attribute("appleconnect.no_such_module")
    cited = sum(
        len(DOC_REFERENCE.findall(p.read_text(encoding="utf-8", errors="replace")))
        for p in _scanned_files()
        if p.is_relative_to(ROOT / "src")
    )
    assert cited >= 20


def test_the_architecture_diagram_is_rendered_from_its_source() -> None:
    """Every label of docs/architecture.dot is in docs/architecture.svg: the SVG was rendered
    again after the source changed."""
    source = (DOCS / "architecture.dot").read_text(encoding="utf-8")
    svg = html.unescape((DOCS / "architecture.svg").read_text(encoding="utf-8"))
    texts = {" ".join(t.split()) for t in re.findall(r"<text[^>]*>([^<]*)</text>", svg)}
    lines = [
        " ".join(line.replace('\\"', '"').split())
        for label in re.findall(r'label="((?:[^"\\]|\\.)*)"', source)
        for line in label.split("\\n")
    ]
    assert len(lines) > 30
    assert [line for line in lines if line not in texts] == []


def test_every_threat_in_the_security_model_names_a_test() -> None:
    """Each row of docs/security.md's tables cites at least one test, in the full
    ``tests/….py::name`` form that :func:`test_cited_tests_and_source_files_exist` checks."""
    text = (DOCS / "security.md").read_text(encoding="utf-8")
    rows = [
        line
        for line in text.splitlines()
        if line.startswith("| ") and not line.startswith("| Threat ")
    ]
    assert len(rows) >= 30
    untested = [row[:80] for row in rows if not TEST_REFERENCE.search(row.split(" | ")[-1])]
    assert untested == []
    shorthand = re.findall(r"`(::\w+|(?!tests/)[\w/]+\.py::\w+)`", text)
    assert shorthand == []
