"""Links hold: the docs reach each other, and error messages reach the docs.

- docs/index.md lists every page of docs/.
- Every relative markdown link in README.md and docs/**/*.md points at a file
  that exists, and its ``#anchor``, if any, at a heading of that page.
- Every docs page and ``#anchor`` an error message prints (``docs/<page>.md``,
  or ``{DOCS}/<page>/#anchor`` through a ``*_PAGE`` constant) matches a page
  and a heading of docs/.
- Every flag, env var, ``[tool.sqlsandbox]`` key and mark a message tells the
  user to set exists, so the fix a message gives can be applied.

Anchors follow GitHub's rules: the heading text without markup, lower-cased,
punctuation dropped, each space turned into '-', and '-1', '-2' ... appended
to repeated headings. Explicit ``<a id="...">`` / ``<a name="...">`` count too.

Known breakage that belongs to pages or code other people own is listed in
KNOWN_BROKEN_* with the reason; those cases are xfail (not strict, so a fix
elsewhere shows as XPASS instead of failing: remove the entry then).
"""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

from sqlsandbox._settings import KEYS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SRC = ROOT / "src" / "sqlsandbox"

# -- markdown ---------------------------------------------------------------------------------

_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"", re.IGNORECASE)
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
_MARKUP_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """Return the (line number, line) pairs outside fenced code blocks."""
    lines: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        match = _FENCE.match(line)
        if match:
            if fence is None:
                fence = match.group(1)
            elif match.group(1) == fence:
                fence = None
            continue
        if fence is None:
            lines.append((number, line))
    return lines


def github_slug(heading: str) -> str:
    """Return the anchor GitHub gives a heading.

    ``## `url_env`: pointing`` becomes ``url_env-pointing``.
    """
    text = _MARKUP_LINK.sub(r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text)
    text = text.lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Return every anchor a markdown page offers (headings and explicit HTML anchors)."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in _prose_lines(page.read_text(encoding="utf-8")):
        found.update(_HTML_ANCHOR.findall(line))
        match = _HEADING.match(line)
        if match is None:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


@dataclasses.dataclass(frozen=True)
class Link:
    """One relative link of a markdown file."""

    source: Path
    line: int
    target: str

    def __str__(self) -> str:
        return f"{self.source.relative_to(ROOT)}:{self.line}: {self.target}"


def markdown_files() -> list[Path]:
    """Return README.md and every markdown page under docs/."""
    files = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    return [f for f in files if f.is_file()]


def relative_links(page: Path) -> list[Link]:
    """Return the links of *page* that point inside the repository."""
    links: list[Link] = []
    for number, line in _prose_lines(page.read_text(encoding="utf-8")):
        targets = [m.group(1) for m in _INLINE_LINK.finditer(_CODE_SPAN.sub("", line))]
        definition = _REFERENCE_DEF.match(line)
        if definition:
            targets.append(definition.group(1))
        for target in targets:
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("//"):
                continue  # http:, https:, mailto: ...
            links.append(Link(page, number, target))
    return links


def link_problem(link: Link) -> str | None:
    """Say what is wrong with *link*, or None when it reaches its file and heading."""
    path, _, anchor = link.target.partition("#")
    target = (link.source.parent / path).resolve() if path else link.source
    if not target.exists():
        shown = target.relative_to(ROOT) if ROOT in target.parents else target
        return f"{link}: {shown} does not exist"
    if anchor and target.suffix == ".md" and anchor not in anchors(target):
        return f"{link}: no heading with anchor #{anchor} in {target.relative_to(ROOT)}"
    return None


# -- what the code prints ---------------------------------------------------------------------

#: ``DOCS_PAGE = f"{DOCS}/ownership/"``: a constant naming one docs page.
_PAGE_CONSTANT = re.compile(
    r"\b(\w+)\s*(?::\s*\w+\s*)?=\s*f[\"']\{DOCS\}/([\w-]+(?:/[\w-]+)*)/?[\"']"
)
#: ``{DOCS_PAGE}#owner-ended``
_CONSTANT_ANCHOR = re.compile(r"\{(\w+)\}#([\w-]+)")
#: ``{DOCS}/ownership/#modes`` or the published address written out.
_URL_PAGE = re.compile(
    r"(?:\{DOCS\}|sqlsandbox\.readthedocs\.io/en/\w+)/([\w-]+(?:/[\w-]+)*)/?(?:#([\w-]+))?"
)
#: ``docs/configuration.md`` or ``docs/configuration.md#url``.
_DOCS_PATH = re.compile(r"\bdocs/([\w/-]+)\.md(?:#([\w-]+))?")


@dataclasses.dataclass(frozen=True)
class CodeLink:
    """A docs page, and maybe a heading, that code in src/ points users at."""

    page: str
    anchor: str
    where: str

    @property
    def id(self) -> str:
        return f"{self.page}#{self.anchor}" if self.anchor else self.page


def _source_files() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def code_links() -> tuple[list[CodeLink], list[str]]:
    """Collect the docs links of src/; also return ``{NAME}#anchor`` uses that name no page."""
    texts = {path: path.read_text(encoding="utf-8") for path in _source_files()}
    pages: dict[str, dict[Path, str]] = {}
    for path, text in texts.items():
        for name, page in _PAGE_CONSTANT.findall(text):
            pages.setdefault(name, {})[path] = page
    links: list[CodeLink] = []
    unresolved: list[str] = []
    for path, text in texts.items():
        for number, line in enumerate(text.splitlines(), start=1):
            where = f"{path.relative_to(ROOT)}:{number}"
            for page, anchor in _DOCS_PATH.findall(line):
                links.append(CodeLink(page, anchor, where))
            for page, anchor in _URL_PAGE.findall(line):
                links.append(CodeLink(page, anchor, where))
            for name, anchor in _CONSTANT_ANCHOR.findall(line):
                defined = pages.get(name, {})
                # A module's own constant first; else one imported (unique across src/).
                page = defined.get(path) or (
                    next(iter(defined.values())) if len(set(defined.values())) == 1 else None
                )
                if page is None:
                    unresolved.append(f"{where}: {{{name}}}#{anchor}")
                else:
                    links.append(CodeLink(page, anchor, where))
    return links, unresolved


def _group(links: list[CodeLink]) -> dict[str, list[CodeLink]]:
    grouped: dict[str, list[CodeLink]] = {}
    for link in links:
        grouped.setdefault(link.id, []).append(link)
    return grouped


#: Docs links printed by code that do not resolve yet, and why (reported to the lead).
KNOWN_BROKEN_CODE_LINKS: dict[str, str] = {}

_CODE_LINKS, _UNRESOLVED = code_links()
_CODE_LINK_GROUPS = _group(_CODE_LINKS)


def _code_link_params() -> list[object]:
    params: list[object] = []
    for key, group in sorted(_CODE_LINK_GROUPS.items()):
        reason = KNOWN_BROKEN_CODE_LINKS.get(key)
        marks = [pytest.mark.xfail(reason=reason, strict=False)] if reason else []
        params.append(pytest.param(group, id=key, marks=marks))
    return params


# -- the fixes messages name ------------------------------------------------------------------


def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def code_strings() -> list[tuple[str, str]]:
    """Return (text, file:line) of every string literal in src/ except docstrings.

    The literal parts of f-strings count, with ``{}`` where a value goes.
    """
    found: list[tuple[str, str]] = []
    for path in _source_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _docstring_nodes(tree)
        parts_of_fstrings: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr):
                text = "".join(
                    str(v.value) if isinstance(v, ast.Constant) else "{}" for v in node.values
                )
                parts_of_fstrings.update(id(v) for v in node.values)
                found.append((text, f"{path.relative_to(ROOT)}:{node.lineno}"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in skip
                and id(node) not in parts_of_fstrings
            ):
                found.append((node.value, f"{path.relative_to(ROOT)}:{node.lineno}"))
    return found


_STRINGS = code_strings()
_FLAGS = {key.flag for key in KEYS} | {key.negative_flag for key in KEYS if key.negative_flag}
#: Env vars sqlsandbox reads: the settings', and names code spells out whole
#: (``CACHE_DIR_ENV = "SQLSANDBOX_CACHE_DIR"``).
_ENV_VARS = {key.env for key in KEYS} | {
    text for text, _ in _STRINGS if re.fullmatch(r"SQLSANDBOX_[A-Z0-9_]+", text)
}
_KEY_NAMES = {key.name for key in KEYS}


def named_fixes() -> dict[str, list[str]]:
    """Map each flag, env var, file key, setting and mark a message names to where."""
    patterns = {
        "flag": re.compile(r"(--sqlsandbox-[a-z0-9-]+)"),
        "env": re.compile(r"\b(SQLSANDBOX_[A-Z0-9_]+)\b"),
        # "[tool.sqlsandbox] url." names a key; "[tool.sqlsandbox] in {path}" does not.
        "file": re.compile(r"\[tool\.sqlsandbox\] ([a-z_]+)(?=[).,;:]| =|$)"),
        "setting": re.compile(r"the `(\w+)` setting(?! of)"),
        "mark": re.compile(r"@pytest\.mark\.(\w+)"),
    }
    fixes: dict[str, list[str]] = {}
    for text, where in _STRINGS:
        if re.fullmatch(r"SQLSANDBOX_[A-Z0-9_]+", text):
            continue  # a name the code reads, not a message
        for kind, pattern in patterns.items():
            for name in pattern.findall(text):
                fixes.setdefault(f"{kind}:{name}", []).append(where)
    return fixes


#: Fixes messages name that do not exist yet, and why (reported to the lead).
KNOWN_MISSING_FIXES: dict[str, str] = {}

_FIXES = named_fixes()


def _registered_marks(config: pytest.Config) -> set[str]:
    return {line.split(":")[0].split("(")[0].strip() for line in config.getini("markers")}


def _fix_params() -> list[object]:
    params: list[object] = []
    for key, places in sorted(_FIXES.items()):
        reason = KNOWN_MISSING_FIXES.get(key)
        marks = [pytest.mark.xfail(reason=reason, strict=False)] if reason else []
        params.append(pytest.param(key, places, id=key, marks=marks))
    return params


# -- tests ------------------------------------------------------------------------------------


def test_github_slug_follows_github_rules() -> None:
    assert github_slug("`url_env`: pointing an app at the test database") == (
        "url_env-pointing-an-app-at-the-test-database"
    )
    assert github_slug("The mark: `@pytest.mark.sandbox`") == "the-mark-pytestmarksandbox"
    assert github_slug("MariaDB / MySQL") == "mariadb--mysql"
    assert github_slug("psycopg 3 (sync, asyncio, psycopg_pool)") == (
        "psycopg-3-sync-asyncio-psycopg_pool"
    )
    assert github_slug("See [servers](servers.md)") == "see-servers"


def test_repeated_headings_get_numbered_anchors(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text('# Errors\n\n```\n# not a heading\n```\n\n## Errors\n<a id="custom"></a>\n')
    assert anchors(page) == {"errors", "errors-1", "custom"}


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_reach_a_file_and_heading(page: Path) -> None:
    problems = [p for p in map(link_problem, relative_links(page)) if p]
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_links_in_code_are_found() -> None:
    # The collector must see the links error messages print, or the test below checks nothing.
    ids = set(_CODE_LINK_GROUPS)
    assert "ownership#ownershiperror" in ids
    assert "configuration" in ids
    assert not _UNRESOLVED, (
        "these {NAME}#anchor uses name no docs page (define NAME = f'{DOCS}/<page>/'):\n"
        + "\n".join(_UNRESOLVED)
    )


@pytest.mark.parametrize("group", _code_link_params())
def test_docs_links_printed_by_code_exist(group: list[CodeLink]) -> None:
    page = DOCS / f"{group[0].page}.md"
    places = ", ".join(link.where for link in group)
    assert page.is_file(), f"{places} point at docs/{group[0].page}.md, which does not exist"
    anchor = group[0].anchor
    if anchor:
        assert anchor in anchors(page), (
            f"{places} point at docs/{group[0].page}.md#{anchor}, but no heading of that page "
            f"has that anchor; headings: {sorted(anchors(page))}"
        )


@pytest.mark.parametrize(("fix", "places"), _fix_params())
def test_fixes_named_by_messages_exist(
    fix: str, places: list[str], pytestconfig: pytest.Config
) -> None:
    kind, _, name = fix.partition(":")
    known = {
        "flag": _FLAGS,
        "env": _ENV_VARS,
        "file": _KEY_NAMES,
        "setting": _KEY_NAMES,
        "mark": _registered_marks(pytestconfig),
    }[kind]
    assert name in known, (
        f"{', '.join(places)} tell users to use {kind} {name!r}, which does not exist"
    )


def test_index_lists_every_page() -> None:
    index = DOCS / "index.md"
    listed = {
        (index.parent / link.target.partition("#")[0]).resolve() for link in relative_links(index)
    }
    pages = {page.resolve() for page in DOCS.rglob("*.md")} - {index.resolve()}
    missing = sorted(str(page.relative_to(DOCS)) for page in pages - listed)
    assert not missing, f"add a line for these pages to docs/index.md: {missing}"
