"""A small YAML writer for the files ``wsgi-observe export`` makes (no PyYAML needed).

It writes block-style mappings and sequences of mappings, sequences, strings, numbers,
booleans and None, and nothing else. Every string comes out in a form that YAML 1.1 (Go's
``yaml.v2``, which Prometheus and Alertmanager read) and YAML 1.2 parse back to the same
text:

- plain (unquoted) only when it cannot be read as anything but that string: it starts
  with a letter or ``_``, holds only letters, digits and ``_ . / : -``, does not end with
  ``:``, and is not a word YAML 1.1 reads as a boolean or null (``yes``, ``off``, ``~``...);
  or it is a Prometheus duration such as ``5m``;
- single-quoted (only ``'`` doubled) for one line of printable characters, such as
  PromQL or a template with ``"`` and ``{{ }}`` in it;
- a literal block (``|-``) for multi-line text such as PromQL, when every line is safe
  there (printable, no leading blank on the first line, no trailing blanks);
- otherwise double-quoted, with ``\\``, ``"`` and every character outside YAML's
  printable set escaped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["dump"]

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_./:-]*\Z")
_DURATION = re.compile(r"(?:[0-9]+(?:ms|s|m|h|d|w|y))+\Z")
# Words YAML 1.1 resolves to booleans or null (any case); quoted wherever they appear.
_SPECIAL = frozenset("y n yes no on off true false null ~".split())
_INDENT = "  "


def _is_printable(char: str) -> bool:
    # YAML's c-printable, minus the line breaks and tab handled by the callers.
    code = ord(char)
    return (
        0x20 <= code <= 0x7E
        or code == 0x85
        or 0xA0 <= code <= 0xD7FF
        or 0xE000 <= code <= 0xFFFD
        or 0x10000 <= code <= 0x10FFFF
    ) and char != "\ufeff"


def _quoted(text: str) -> str:
    out = ['"']
    for char in text:
        if char == "\\":
            out.append("\\\\")
        elif char == '"':
            out.append('\\"')
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif _is_printable(char):
            out.append(char)
        elif ord(char) <= 0xFF:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    out.append('"')
    return "".join(out)


def _is_plain(text: str) -> bool:
    if _DURATION.match(text):
        return True
    return bool(_PLAIN.match(text)) and not text.endswith(":") and text.lower() not in _SPECIAL


def _is_block(text: str) -> bool:
    if "\n" not in text or text.endswith("\n") or text[:1] in (" ", "\t", ""):
        return False
    for line in text.split("\n"):
        if line != line.rstrip(" \t") or not all(c == "\t" or _is_printable(c) for c in line):
            return False
    return True


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} has no place in these files")
        return repr(value)
    if isinstance(value, str):
        if _is_plain(value):
            return value
        if value and all(_is_printable(char) for char in value):
            return "'" + value.replace("'", "''") + "'"
        return _quoted(value)
    raise TypeError(f"cannot write {type(value).__name__} as YAML")


def _key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"mapping keys must be strings, not {type(key).__name__}")
    return _scalar(key)


def _lines(value: Any, depth: int) -> list[str]:
    """The lines of a mapping or sequence, each indented ``depth`` levels."""
    pad = _INDENT * depth
    out: list[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            out.extend(_entry(pad + _key(key) + ":", item, depth))
        return out
    for item in value:
        if isinstance(item, Mapping) and item:
            inner = _lines(item, depth + 1)
            # "- " takes the place of the first key's indentation.
            out.append(pad + "- " + inner[0][len(pad) + len(_INDENT) :])
            out.extend(inner[1:])
        else:
            out.extend(_entry(pad + "-", item, depth))
    return out


def _entry(head: str, item: Any, depth: int) -> list[str]:
    """``head`` (``key:`` or ``-``) followed by ``item``, inline or on the next lines."""
    if isinstance(item, Mapping):
        return [head + " {}"] if not item else [head, *_lines(item, depth + 1)]
    if isinstance(item, Sequence) and not isinstance(item, str):
        return [head + " []"] if not item else [head, *_lines(item, depth + 1)]
    if isinstance(item, str) and _is_block(item):
        pad = _INDENT * (depth + 1)
        return [head + " |-", *(pad + line if line else "" for line in item.split("\n"))]
    return [f"{head} {_scalar(item)}"]


def dump(data: Mapping[str, Any], *, header: str = "") -> str:
    """``data`` as a YAML document; ``header`` lines become ``#`` comments on top."""
    comments = [f"# {line}".rstrip() for line in header.splitlines()]
    return "\n".join([*comments, *_lines(data, 0)]) + "\n"
