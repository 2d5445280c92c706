"""``include``: a chain's shared defaults in one file, each till's own settings in its own (issue 19).

``include = ["/etc/settleguard/chain.toml"]`` (a string or a list; a relative path is relative to the
file that says it; a top-level key, so before the first ``[table]``) reads those files first, in
order, then the including file on top:

* tables merge key by key, deeply: ``[settlement] cutoff`` in the till's file overrides the chain's,
  the chain's other ``[settlement]`` keys stay;
* an array — ``[[channel]]``, ``[[source]]``, ``review_times`` — is taken whole from the last file
  that has it: a till file with its own ``[[channel]]`` list replaces the chain's list (there is no way
  to tell "also" from "instead" in TOML, and a replaced list is the one that reads as it runs);
* an included file may include others; a cycle is refused.

Each file keeps its text, so an error in the merged configuration is reported against the file (and
line) the offending value came from (:func:`origin`).
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A chain layout is two or three files deep; anything deeper is a mistake, not a design.
MAX_DEPTH = 8


class IncludeError(Exception):
    """A file that cannot be included (missing, not TOML, a cycle): file, field, message, line."""

    def __init__(self, file: str, field: str, message: str, line: int | None = None) -> None:
        self.file, self.field, self.message, self.line = file, field, message, line
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Layer:
    path: str                 # as given (the main file) or as resolved (an included one)
    text: str
    raw: dict[str, Any]       # this file's own keys, ``include`` removed


def parse_toml(text: str, path: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise IncludeError(path, "", f"not valid TOML: {exc}", int(m.group(1)) if m else None) from None


def layers(raw: dict[str, Any], text: str, path: str, *, locate: Any,
           _stack: tuple[str, ...] = ()) -> list[Layer]:
    """The files to merge, lowest priority first; the file itself is the last. ``locate(text, loc)``
    gives the line of a key (config._locate), for errors about the include key itself."""
    raw = dict(raw)
    wanted = raw.pop("include", None)
    here = _real(path)
    stack = (*_stack, here)
    if wanted is None:
        return [Layer(path, text, raw)]
    line = locate(text, ("include",))
    names = [wanted] if isinstance(wanted, str) else wanted
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        raise IncludeError(path, "include", 'must be a file name or a list of them, like '
                                            '["/etc/settleguard/chain.toml"]', line)
    if len(stack) > MAX_DEPTH:
        raise IncludeError(path, "include", f"includes nest deeper than {MAX_DEPTH} files", line)
    base = Path(path).parent if not path.startswith("<") else Path.cwd()
    out: list[Layer] = []
    for name in names:
        target = Path(name).expanduser()
        target = target if target.is_absolute() else base / target
        if _real(str(target)) in stack:
            chain = " -> ".join([*stack, _real(str(target))])
            raise IncludeError(path, "include", f"include cycle: {chain}", line)
        try:
            included = target.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise IncludeError(path, "include", f"{target}: file not found", line) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise IncludeError(path, "include", f"{target}: cannot read: {exc}", line) from None
        out += layers(parse_toml(included, str(target)), included, str(target), locate=locate, _stack=stack)
    out.append(Layer(path, text, raw))
    return out


def merge(stack: list[Layer]) -> dict[str, Any]:
    """The layers merged: tables deeply, everything else (arrays included) replaced by the later file."""
    out: dict[str, Any] = {}
    for layer in stack:
        out = _merge(out, layer.raw)
    return out


def _merge(low: dict[str, Any], high: dict[str, Any]) -> dict[str, Any]:
    out = dict(low)
    for key, value in high.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def origin(stack: list[Layer], loc: tuple[Any, ...]) -> Layer:
    """The file a value at ``loc`` came from: the last one that has the longest part of that path (a
    missing key is blamed on the file whose table it is missing from; with none, the main file)."""
    for depth in range(len(loc), 0, -1):
        for layer in reversed(stack):
            if _has(layer.raw, loc[:depth]):
                return layer
    return stack[-1]


def _has(node: Any, path: tuple[Any, ...]) -> bool:
    for part in path:
        if isinstance(node, dict) and not isinstance(part, int) and str(part) in node:
            node = node[str(part)]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return False
    return True


def _real(path: str) -> str:
    return path if path.startswith("<") else os.path.realpath(path)
