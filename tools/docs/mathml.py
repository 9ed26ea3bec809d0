"""A Markdown extension for the docs: LaTeX math turned into MathML when the site is built.

The page then holds the formula itself, as MathML Core (which Chromium, Firefox and Safari draw),
so it needs no script, no font or file from a CDN, and reads the same opened from disk.

What counts as math, in the guides and in the docstrings mkdocstrings renders:

* ``$...$`` inline and ``$$...$$`` (inline, or a paragraph of its own: displayed). A ``$`` inside
  code is code, and ``$HOME`` / ``$5`` are not math (the opening ``$`` must be followed, the
  closing one preceded, by a non-space, and no word may touch either from outside);
* the reStructuredText forms the docstrings use: the role ``:math:`...``` inline and a
  ``.. math::`` paragraph (the formula on its line or indented below) displayed.

Other reStructuredText roles of the docstrings (``:class:`Always```, ``:meth:`~x.y```) are shown as
the code they name instead of as raw ``:class:`` text. A formula latex2mathml cannot convert, or
converts leaving a backslash command as text, or whose braces do not pair, is logged as a warning,
which fails the strict build.
"""

from __future__ import annotations

import html
import logging
import re
import textwrap
import unicodedata
import xml.etree.ElementTree as etree

from latex2mathml.converter import convert
from markdown import Extension, Markdown
from markdown.blockparser import BlockParser
from markdown.blockprocessors import BlockProcessor
from markdown.inlinepatterns import InlineProcessor
from markdown.util import AtomicString

log = logging.getLogger("mkdocs.plugins.samkit.math")

# Where these inline patterns sit among Python-Markdown's: code spans (`...`, 190) are taken first,
# so a `$` inside code stays code; the role form must run before them, as it ends in a code span;
# backslash escapes (180) come after, so `\|` and `\{` reach LaTeX untouched.
ROLE_MATH_PRIORITY = 195
DOLLAR_PRIORITY = 185

# mathvariant values MathML Core leaves undrawn, mapped to Unicode's mathematical letters instead
# (by character name: `MATHEMATICAL DOUBLE-STRUCK CAPITAL E`, or the older `SCRIPT CAPITAL H`).
_VARIANTS = {"double-struck": "DOUBLE-STRUCK", "script": "SCRIPT", "bold": "BOLD", "fraktur": "FRAKTUR"}
_DIGITS = "ZERO ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE".split()


def _styled(char: str, variant: str) -> str:
    if char.isdigit():
        kind = f"DIGIT {_DIGITS[int(char)]}"
    elif char.isascii() and char.isalpha():
        kind = f"{'CAPITAL' if char.isupper() else 'SMALL'} {char.upper()}"
    else:
        return char
    for name in (f"MATHEMATICAL {variant} {kind}", f"{variant} {kind}"):
        try:
            return unicodedata.lookup(name)
        except KeyError:
            continue
    return char


def _restyle(match: re.Match[str]) -> str:
    tag, variant, text = match.group(1), match.group(2), html.unescape(match.group(3))
    if variant == "normal":
        return match.group(0)
    styled = "".join(_styled(c, _VARIANTS[variant]) for c in text) if variant in _VARIANTS else text
    return f"<{tag}>{html.escape(styled, quote=False)}</{tag}>"


# A word written as upright letters (\mathrm{tr}, \operatorname{base\_step}): latex2mathml gives
# one <mi mathvariant="normal"> per letter; one <mi> of several letters is upright and kerned.
_UPRIGHT_RUN = re.compile(r'<mrow>((?:<mi mathvariant="normal">[^<]*</mi>){2,})</mrow>')
_UPRIGHT_LETTER = re.compile(r'<mi mathvariant="normal">([^<]*)</mi>')
_VARIANT = re.compile(r'<(mi|mn|mo|mtext) mathvariant="([\w-]+)">([^<]*)</\1>')
_OPERATORNAME = re.compile(r"\\operatorname\s*\{")
_TEXT_ARG = re.compile(r"\\(text|texttt)\s*\{([^{}]*)\}")


def to_mathml(tex: str, display: bool = False) -> str:
    """``tex`` as one ``<math>`` element (``display="block"`` when displayed)."""
    written = " ".join(tex.split())
    braces = re.sub(r"\\[{}]", "", written)
    if braces.count("{") != braces.count("}"):  # latex2mathml would draw it anyway, wrongly
        log.warning("math: unbalanced braces in %r", tex)
    # latex2mathml draws \operatorname as an empty <mo> and italic letters; \mathrm is what it means.
    source = _OPERATORNAME.sub(r"\\mathrm{", written)
    # Inside \text{} latex2mathml keeps `\_` as it is: the escape is for LaTeX, the reader wants `_`.
    source = _TEXT_ARG.sub(lambda m: f"\\{m.group(1)}{{" + m.group(2).replace("\\_", "_") + "}", source)
    try:
        mathml = convert(source, display="block" if display else "inline")
    except Exception as err:  # latex2mathml raises its own exceptions and plain ones
        log.warning("math: cannot convert %r: %s", tex, err)
        return f"<code>{html.escape(tex)}</code>"
    mathml = _UPRIGHT_RUN.sub(
        lambda m: "<mi>" + "".join(_UPRIGHT_LETTER.findall(m.group(1))) + "</mi>", mathml
    )
    mathml = _VARIANT.sub(_restyle, mathml)
    shown = "".join(etree.fromstring(mathml).itertext())
    if "\\" in shown:
        log.warning("math: %r is drawn with a raw command in it: %r", tex, shown)
    # The TeX source rides along (annotation-xml is not drawn) for copy-paste and search.
    return mathml.replace(">", f' data-tex="{html.escape(written)}">', 1)


class _RoleMath(InlineProcessor):
    """``:math:`...``` (reStructuredText, in the docstrings)."""

    def handleMatch(self, m: re.Match[str], data: str) -> tuple[str, int, int]:  # noqa: N802
        return self.md.htmlStash.store(to_mathml(m.group(1))), m.start(0), m.end(0)


class _DollarMath(InlineProcessor):
    """``$...$`` inline, ``$$...$$`` displayed."""

    def handleMatch(self, m: re.Match[str], data: str) -> tuple[str, int, int]:  # noqa: N802
        display = m.group(1) is not None
        tex = m.group(1) if display else m.group(2)
        return self.md.htmlStash.store(to_mathml(tex, display)), m.start(0), m.end(0)


class _Role(InlineProcessor):
    """``:class:`Always```, ``:meth:`~a.b.c``` and the like: the name as code (``~``: last part)."""

    def handleMatch(self, m: re.Match[str], data: str) -> tuple[etree.Element, int, int]:  # noqa: N802
        target = m.group(1)
        if target.startswith("~"):
            target = target[1:].rsplit(".", 1)[-1]
        code = etree.Element("code")
        code.text = AtomicString(target)
        return code, m.start(0), m.end(0)


class _MathBlock(BlockProcessor):
    """A paragraph that is one formula: ``.. math::`` (formula on the line or indented below) or
    ``$$ ... $$``; drawn displayed, in a box that scrolls sideways if the formula is wider than
    the page."""

    DIRECTIVE = re.compile(r"^\.\. math::[ \t]*")

    def __init__(self, parser: BlockParser, md: Markdown) -> None:
        super().__init__(parser)
        self.md = md

    def test(self, parent: etree.Element, block: str) -> bool:
        stripped = block.strip()
        if self.DIRECTIVE.match(block):
            return True
        return stripped.startswith("$$") and stripped.endswith("$$") and len(stripped) > 4 \
            and "$$" not in stripped[2:-2]

    def run(self, parent: etree.Element, blocks: list[str]) -> None:
        block = blocks.pop(0)
        if self.DIRECTIVE.match(block):
            first, _, rest = self.DIRECTIVE.sub("", block).partition("\n")
            tex = first + "\n" + textwrap.dedent(rest)
        else:
            tex = block.strip()[2:-2]
        box = etree.SubElement(parent, "div")
        box.set("class", "math-display")
        box.text = self.md.htmlStash.store(to_mathml(tex, display=True))


class MathExtension(Extension):
    """Register the patterns above (``markdown_extensions`` takes an instance of it)."""

    def extendMarkdown(self, md: Markdown) -> None:  # noqa: N802
        md.inlinePatterns.register(
            _RoleMath(r":math:`([^`]+)`", md), "samkit_math_role", ROLE_MATH_PRIORITY
        )
        md.inlinePatterns.register(
            _Role(r":(?:class|meth|func|mod|data|attr|obj|exc|py:\w+):`([^`]+)`", md),
            "samkit_rst_role",
            ROLE_MATH_PRIORITY,
        )
        md.inlinePatterns.register(
            _DollarMath(
                r"(?<![\\$\w])(?:\$\$(?=\S)(.+?)(?<=\S)(?<!\\)\$\$"
                r"|\$(?=[^\s$])(.+?)(?<=[^\s\\$])\$)(?![\w$])",
                md,
            ),
            "samkit_math_dollar",
            DOLLAR_PRIORITY,
        )
        # before the paragraph (10) and indented code (80): `.. math::` is followed by indented lines
        md.parser.blockprocessors.register(_MathBlock(md.parser, md), "samkit_math_block", 95)
