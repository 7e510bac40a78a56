"""Just enough reStructuredText for training text: split a page into titled sections and strip the markup.

Not a reST parser: headings, directives, comments, tables and inline roles are recognised by their line shapes,
which is what Sphinx sources such as the Python documentation use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ADORNMENT = re.compile(r"([=\-~^\"'`#*+<>:._])\1{2,}\s*")
DIRECTIVE = re.compile(r"(\s*)\.\.\s+([\w:.-]+)::(.*)")
COMMENT = re.compile(r"(\s*)\.\.(\s|$)")
OPTION = re.compile(r"\s+:[\w.-]+:(\s.*)?")
TABLE_RULE = re.compile(r"\s*(\+[-=+]+\+|=+( +=+)+|-+( +-+)+)\s*")
# Directives whose content is not prose (navigation, metadata, includes): dropped with their whole block.
DROPPED = {
    "index", "toctree", "highlight", "contents", "sectionauthor", "moduleauthor", "codeauthor", "testsetup",
    "testcleanup", "raw", "image", "figure", "tabularcolumns", "literalinclude", "include", "cssclass", "rst-class",
    "currentmodule", "module", "c:namespace", "only", "audit-event-table", "productionlist", "role", "default-role",
    "program", "autosummary",
}  # fmt: skip
# Directives whose argument names a language or a format, not text: the content stays, the argument goes.
BARE = {"code-block", "code", "sourcecode", "doctest", "testcode", "testoutput", "csv-table", "table", "list-table"}
LABELS = {"versionadded": "New in version {}.", "versionchanged": "Changed in version {}:",
          "deprecated": "Deprecated since version {}:", "seealso": "See also:"}  # fmt: skip
_ROLE = re.compile(r"(?::([\w.:+-]+):)?`([^`]+)`(?:__?)?")
# Roles whose text is a bare number: the name goes back in front of it.
NUMBERED = {"pep": "PEP {}", "rfc": "RFC {}", "issue": "bpo-{}", "gh": "gh-{}"}
_LEFTOVER = re.compile(r"\.\. (_[^:]+:|[\w:.-]+::)")  # a directive or target inside a table or list item
_LITERAL = re.compile(r"``(.+?)``")
_STRONG = re.compile(r"\*\*(\S(?:.*?\S)?)\*\*")
_EMPHASIS = re.compile(r"(?<![\w*])\*(\S(?:[^*]*?\S)?)\*(?![\w*])")
_SUBSTITUTION = re.compile(r"\|([\w .-]+)\|(?:_)?")


@dataclass(frozen=True)
class Section:
    """A titled section of a page.

    ``title`` has its markup stripped; ``lines`` are the raw reST lines of the section's own text (up to the next
    heading of any level); ``level`` is the heading style's order of appearance in the page (0 = the page title).
    """

    title: str
    lines: tuple[str, ...]
    level: int


def split_sections(text: str) -> list[Section]:
    """Split a reST page into sections at every heading; text before the first heading is dropped.

    A heading is a title underlined, or over- and underlined, with one repeated punctuation character.
    """
    lines = text.splitlines()
    styles: list[str] = []
    sections: list[Section] = []
    title, body, level = None, [], 0
    i = 0
    while i < len(lines):
        found = _heading_at(lines, i)
        if found is None:
            body.append(lines[i])
            i += 1
            continue
        heading, style, used = found
        if title is not None:
            sections.append(Section(title, tuple(body), level))
        styles += [style] * (style not in styles)
        title, body, level, i = inline_text(heading), [], styles.index(style), i + used
    if title is not None:
        sections.append(Section(title, tuple(body), level))
    return sections


def _heading_at(lines: list[str], i: int) -> tuple[str, str, int] | None:
    """``(title, style, lines used)`` when a heading starts at line ``i``, else None.

    The style is the adornment character, prefixed by ``"o"`` when the heading has an overline.
    """
    if i > 0 and lines[i - 1].strip():
        return None
    over = ADORNMENT.fullmatch(lines[i])
    if over and i + 2 < len(lines) and lines[i + 1].strip() and lines[i + 2].rstrip() == lines[i].rstrip():
        return lines[i + 1].strip(), "o" + over.group(1), 3
    if lines[i].strip() and not lines[i][0].isspace() and not over and i + 1 < len(lines):
        under = ADORNMENT.fullmatch(lines[i + 1])
        if under and not DIRECTIVE.match(lines[i]) and not COMMENT.match(lines[i]):
            return lines[i].strip(), under.group(1), 2
    return None


def plain_text(lines: tuple[str, ...] | list[str]) -> str:
    """The prose of reST lines on one line: directives and comments handled, tables and inline markup removed."""
    kept: list[str] = []
    i = 0
    while i < len(lines):
        line, i = lines[i], i + 1
        directive = DIRECTIVE.match(line)
        if directive or COMMENT.match(line):
            indent = len(line) - len(line.lstrip())
            name, argument = (directive.group(2), directive.group(3).strip()) if directive else ("", "")
            if not directive or name in DROPPED:
                i = _block_end(lines, i, indent)
                continue
            while i < len(lines) and OPTION.fullmatch(lines[i]):
                i += 1
            kept.append(LABELS[name].format(argument) if name in LABELS else "" if name in BARE else argument)
        elif not TABLE_RULE.fullmatch(line) and not ADORNMENT.fullmatch(line.strip()) and line.strip() != "::":
            kept.append(re.sub(r"\s*::$", ":", line).replace(" | ", " ").strip(" |"))
    return inline_text(" ".join(kept))


def _block_end(lines: tuple[str, ...] | list[str], i: int, indent: int) -> int:
    """The index after the block that belongs to a directive or comment at ``indent`` (more indented or blank)."""
    end = i
    while i < len(lines):
        if lines[i].strip():
            if len(lines[i]) - len(lines[i].lstrip()) <= indent:
                break
            end = i + 1
        i += 1
    return end


def inline_text(text: str) -> str:
    """Text without inline reST markup, on one line.

    ``:func:`~os.path.join``` -> ``join``, ```text <url>`_`` -> ``text``, ````code```` -> ``code``,
    ``:pep:`8``` -> ``PEP 8``; emphasis and substitutions are unwrapped and `` --- `` becomes an em dash.
    """
    text = _LITERAL.sub(lambda m: m.group(1), text)
    text = _ROLE.sub(lambda m: _role_text(m.group(1), m.group(2)), text)
    text = _LEFTOVER.sub("", text)
    text = _STRONG.sub(r"\1", text)
    text = _EMPHASIS.sub(r"\1", text)
    text = _SUBSTITUTION.sub(r"\1", text)
    text = text.replace("\\ ", "").replace(" --- ", " — ")
    text = re.sub(r"\\(.)", r"\1", text)
    return " ".join(text.split())


def _role_text(role: str | None, content: str) -> str:
    if role in NUMBERED and "<" not in content:
        return NUMBERED[role].format(content.lstrip("!"))
    target = re.fullmatch(r"(.*?)\s*<[^<>]+>", content, flags=re.DOTALL)
    if target and target.group(1):
        return target.group(1)
    content = content.lstrip("!")
    return content[1:].rsplit(".", 1)[-1] if content.startswith("~") else content
