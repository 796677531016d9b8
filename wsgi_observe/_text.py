"""Text that is safe to show anywhere: one line, no terminal controls, valid Unicode."""

from __future__ import annotations

__all__ = ["escape_control"]


def _table(keep_newlines: bool) -> dict[int, str]:
    table = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}
    table.update({0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"})
    if keep_newlines:
        del table[0x0A]
    # Lone surrogates (from a server that broke PEP 3333) are not valid UTF-8: JSON encoders
    # and text streams refuse them.
    table.update({code: "\ufffd" for code in range(0xD800, 0xE000)})
    return table


_ESCAPES = _table(False)
_ESCAPES_KEEP_NEWLINES = _table(True)


def escape_control(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with control characters (C0, DEL, C1) written as ``\\n``, ``\\x1b``, ... and
    lone surrogates as U+FFFD. Text without any (the usual case) is returned as it is."""
    if text.isprintable():
        return text
    return text.translate(_ESCAPES_KEEP_NEWLINES if keep_newlines else _ESCAPES)
