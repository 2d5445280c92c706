"""A composed message laid out for one robot, split into as many messages as its size limit needs.

A :class:`Document` is a headline, head lines kept in every part, and one block per alert. The
layouts (WeCom/DingTalk markdown, Feishu ``post``, plain text) never drop a block: :func:`split`
packs whole blocks into parts below the robot's limit, each part saying "（2/3）" after its
headline, and only a block that alone is too big is broken between its lines. Nothing open is ever
summarised as "另有 N 条".

Text from the wire (operator, voucher, reasons quoting them) and from the configuration (shop name)
is data, never markup (issue 14, observation 5): :func:`clean_text` folds every line break inside a
value into a space, so a value can never start a line (a heading, a quote, a list item, a forged
"已处理" line) in any layout, and breaks URL schemes so no client turns a value into a link.
:func:`md_escape` then makes the markdown robots' syntax inert: WeCom's markdown (headings,
``**``/``*``, ``[x](url)``, `` `code` ``, ``>``, ``<font color>``, ``<@userid>``) and DingTalk's
(the same plus ``![img](url)``, ``-``/``1.`` lists, ``<font>``). Neither robot documents a backslash
escape, so the characters are replaced by their full-width twins, which read the same to a person
and mean nothing to either renderer. Feishu ``post`` ``text`` elements are literal (no
``un_escape``, no ``md`` tag is used), so only the line-break and URL folding applies there.

The one link a message may carry is a :class:`Line` with ``url`` set, made only by
:func:`agent.delivery.channels.render.alert_link` from the configured ``public_url`` (checked as
http/https with no character that could end a markdown link) and an alert code (checked against the
code alphabet). Its label goes through the same cleaning as any text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from agent.delivery.channels.base import dumps
from drivers.pan import scrub_text

# A single runaway line (a huge reason) must not make one alert fill a message on its own.
MAX_LINE_CHARS = 600

Style = Literal["strong", "plain", "quote"]


@dataclass(frozen=True, slots=True)
class Line:
    text: str
    style: Style = "plain"
    url: str | None = None      # set only by render.alert_link: a link to the till page


@dataclass(frozen=True, slots=True)
class Document:
    title: str                            # one line (DingTalk title, Feishu post title)
    head: tuple[Line, ...]                # headline first; kept in every part
    blocks: tuple[tuple[Line, ...], ...]  # one per alert, never dropped
    part: tuple[int, int] | None = None   # (k, n) when this is part k of a message split in n


# ---------------------------------------------------------------------------- cleaning

# Characters that end a line or reorder what is shown: C0/C1 controls (ESC/POS commands on the printer,
# line breaks in every robot), Unicode line/paragraph separators, and bidirectional overrides and
# isolates (they can make "000123" display as "321000").
_UNSAFE_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# A scheme or "www." that a chat client would turn into a link on its own, even in plain text.
# No word boundary: linkifiers find "http://" inside "ahttp://x" too; a full-width colon after "hotel" costs nothing.
_LINKY = re.compile(r"(?i)(https?|ftp|file|javascript|data|mailto|tel|dingtalk|weixin|wxwork|lark|feishu)(\s*):"
                    r"|www\.")


def _defang(match: re.Match[str]) -> str:
    if match.group(1) is None:
        return match.group(0)[:-1] + "．"
    return f"{match.group(1)}{match.group(2)}："


def clean_text(text: str) -> str:
    """One line of plain text, safe for every channel: no line breaks, no controls, no links, no PAN.

    A value that came with a newline is folded into the line it belongs to: one value can never
    start a new line, block or quote wherever it is shown.
    """
    text = _UNSAFE_CHARS.sub(" ", text)
    text = _LINKY.sub(_defang, text)
    text = scrub_text(text)
    return text if len(text) <= MAX_LINE_CHARS else text[: MAX_LINE_CHARS - 1] + "…"


def scrubbed(doc: Document) -> Document:
    def fix(lines: tuple[Line, ...]) -> tuple[Line, ...]:
        return tuple(replace(line, text=clean_text(line.text)) for line in lines)

    return Document(title=clean_text(doc.title), head=fix(doc.head), blocks=tuple(fix(b) for b in doc.blocks),
                    part=doc.part)


# Markdown syntax anywhere in a line -> a full-width twin. '*' is also why masked cards need it: two
# of them in one paragraph would pair up as emphasis and the asterisks would vanish. '\\' so a value
# cannot escape the '**' we put around it; '&' so no entity turns back into '<'.
_MD_INLINE = str.maketrans({
    "*": "＊", "_": "＿", "~": "～", "`": "＇", "[": "［", "]": "］", "<": "＜", ">": "＞",
    "\\": "＼", "&": "＆", "|": "｜",
})
# ... and what is syntax only at the start of a line: headings, lists, setext underlines, and
# leading spaces (an indented code block).
_MD_LEADING = re.compile(r"^(?:[#\-+=]|\d{1,9}[.)])")
_LEADING_TWIN = str.maketrans({"#": "＃", "-": "－", "+": "＋", "=": "＝", ".": "．", ")": "）"})


def md_escape(text: str) -> str:
    """``text`` (already one clean line) made inert for WeCom and DingTalk markdown; it reads the same."""
    text = text.translate(_MD_INLINE).lstrip()
    lead = _MD_LEADING.match(text)
    if lead:
        text = lead.group(0).translate(_LEADING_TWIN) + text[lead.end():]
    return text


# ---------------------------------------------------------------------------- splitting


def _with_part(doc: Document) -> Document:
    if doc.part is None or doc.part[1] == 1:
        return doc
    k, n = doc.part
    first = doc.head[0]
    return replace(doc, head=(replace(first, text=f"{first.text}（{k}/{n}）"), *doc.head[1:]),
                   title=f"{doc.title}（{k}/{n}）")


def split(doc: Document, layout: Callable[[Document], Any], size: Callable[[Any], int], limit: int) -> list[Any]:
    """``doc`` laid out as one or more parts, each within ``limit``; every block appears in one part.

    Blocks are packed in order; a part is closed when the next block would not fit. The "（k/n）"
    marker is reserved for with a two-digit worst case, so the count can be filled in afterwards.
    A block too big on its own is broken between its lines (each line is at most MAX_LINE_CHARS).
    """
    probe = Document(doc.title, doc.head, (), part=(99, 99))

    def fits(blocks: list[tuple[Line, ...]]) -> bool:
        return size(layout(_with_part(replace(probe, blocks=tuple(blocks))))) <= limit

    if not fits([]):
        raise ValueError(f"even the headline of this notice does not fit in {limit} bytes")
    parts: list[list[tuple[Line, ...]]] = [[]]
    for block in doc.blocks:
        for piece in _pieces(block, fits):
            if parts[-1] and not fits([*parts[-1], piece]):
                parts.append([])
            parts[-1].append(piece)
    n = len(parts)
    return [layout(_with_part(Document(doc.title, doc.head, tuple(blocks), part=(k, n))))
            for k, blocks in enumerate(parts, 1)]


def _pieces(block: tuple[Line, ...], fits: Callable[[list[tuple[Line, ...]]], bool]) -> list[tuple[Line, ...]]:
    """The block itself when it fits a part alone; else runs of its lines that do."""
    if fits([block]):
        return [block]
    pieces: list[list[Line]] = [[]]
    for line in block:
        if pieces[-1] and not fits([tuple([*pieces[-1], line])]):
            pieces.append([])
        pieces[-1].append(line)
    return [tuple(p) for p in pieces]


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


# ---------------------------------------------------------------------------- layouts

MarkdownFlavor = Literal["wecom", "dingtalk"]


def _markdown_layout(doc: Document, flavor: MarkdownFlavor) -> str:
    # WeCom breaks lines on "\n"; DingTalk's renderer needs a blank line between paragraphs.
    sep = "\n" if flavor == "wecom" else "\n\n"

    def line(item: Line) -> str:
        text = md_escape(item.text)
        if item.url is not None:
            # The url is checked where it is made (render.alert_link): http(s), no space, no ( ) < > [ ].
            return f"[{text}]({item.url})"
        if item.style == "strong":
            return f"**{text}**"
        if item.style == "quote":
            return f"> {text}"
        return text

    parts = [f"### {md_escape(doc.head[0].text)}", *_below_headline(doc, line)]
    if flavor == "dingtalk":
        parts = [p for p in parts if p]
    return sep.join(parts)


def _below_headline(doc: Document, line: Callable[[Line], str]) -> list[str]:
    """The rest of the head, then each alert block after an empty line."""
    parts = [line(item) for item in doc.head[1:]]
    previous: tuple[Line, ...] = ()
    for block in doc.blocks:
        # A blank line sets the alerts apart from the head and from each other; a list of one-line
        # outcomes reads as a list without one.
        if parts and (not previous or len(block) > 1 or len(previous) > 1):
            parts.append("")
        parts.extend(line(item) for item in block)
        previous = block
    return parts


def to_markdown_parts(doc: Document, *, flavor: MarkdownFlavor, limit_bytes: int) -> list[str]:
    return [str(p) for p in split(doc, lambda d: _markdown_layout(d, flavor), utf8_len, limit_bytes)]


def to_markdown(doc: Document, *, flavor: MarkdownFlavor, limit_bytes: int) -> str:
    """The whole document as one markdown message (tests and previews); robots send the parts."""
    return "\n\n".join(to_markdown_parts(doc, flavor=flavor, limit_bytes=limit_bytes))


def _text_line(item: Line) -> str:
    return f"{item.text} {item.url}" if item.url is not None else item.text


def _text_layout(doc: Document) -> str:
    return "\n".join([doc.head[0].text, *_below_headline(doc, _text_line)])


def to_text_parts(doc: Document, *, limit_bytes: int) -> list[str]:
    return [str(p) for p in split(doc, _text_layout, utf8_len, limit_bytes)]


def to_text(doc: Document, *, limit_bytes: int) -> str:
    return "\n\n".join(to_text_parts(doc, limit_bytes=limit_bytes))


def _feishu_element(item: Line) -> dict[str, Any]:
    if item.url is not None:
        return {"tag": "a", "text": item.text, "href": item.url}
    return {"tag": "text", "text": item.text}


def _feishu_layout(doc: Document) -> dict[str, Any]:
    paragraphs: list[list[dict[str, Any]]] = [[_feishu_element(item)] for item in doc.head[1:]]
    previous: tuple[Line, ...] = ()
    for block in doc.blocks:
        if paragraphs and (not previous or len(block) > 1 or len(previous) > 1):
            paragraphs.append([{"tag": "text", "text": ""}])
        previous = block
        paragraphs.extend([_feishu_element(item)] for item in block)
    # One zh_cn post: the languages the channel asked for are already in the lines, Chinese first.
    return {"zh_cn": {"title": doc.head[0].text, "content": paragraphs}}


def to_feishu_posts(doc: Document, *, limit_bytes: int) -> list[dict[str, Any]]:
    posts: list[dict[str, Any]] = split(doc, _feishu_layout, lambda post: len(dumps(post)), limit_bytes)
    return posts
