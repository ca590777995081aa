"""One kind of error for bad input: it names the field, what is allowed and the value given.

The library raises :class:`InputError`; the CLIs print ``error: <field>: <allowed>; got <value>`` on one
line and exit with status 2 (never a traceback). A CLI relabels the field with the flag the user typed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

#: Files larger than this are refused before reading (curves, profiles, datasets, traces).
MAX_INPUT_BYTES = 512 * 1024 * 1024


def show(value: object, limit: int = 80) -> str:
    """A short, one-line rendering of a bad value for an error message."""
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class InputError(ValueError):
    """Bad input. ``field`` names it, ``allowed`` says what is allowed, ``value`` is what was given."""

    def __init__(self, field: str, allowed: str, value: object = None) -> None:
        self.field, self.allowed, self.value = field, allowed, value
        super().__init__(self.line())

    def line(self) -> str:
        got = "" if self.value is None else f"; got {show(self.value)}"
        return f"{self.field}: {self.allowed}{got}"

    def __reduce__(self):  # it crosses processes (an engine's process of its own raises it in the parent)
        return InputError, (self.field, self.allowed, self.value)

    def relabel(self, field: str, value: object = None) -> InputError:
        """The same complaint under the name the user knows (a flag), keeping inner detail."""
        inner = self.field
        def norm(x: str) -> str:
            return x.lstrip("-").replace("_", "-")

        same = norm(inner) in ("", norm(field))
        allowed = self.allowed if same else f"{inner}: {self.allowed}"
        return InputError(field, allowed, self.value if value is None else value)


class RunFailed(RuntimeError):
    """A run stopped for a reason outside its input (a process it needs died); the CLIs print it on one line."""


def require(ok: bool, field: str, allowed: str, value: object = None) -> None:
    """Raise :class:`InputError` unless ``ok``."""
    if not ok:
        raise InputError(field, allowed, value)


def read_text(path: str | os.PathLike, field: str) -> str:
    """Read a UTF-8 (optionally gzip) file, refusing missing, huge, binary or empty files clearly."""
    import gzip

    p = Path(path)
    require(p.is_file(), field, "must name an existing file", str(path))
    size = p.stat().st_size
    require(size <= MAX_INPUT_BYTES, field, f"file must be at most {MAX_INPUT_BYTES} bytes", f"{size} bytes")
    try:
        raw = p.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
            require(len(raw) <= MAX_INPUT_BYTES, field, "decompressed file too large", f"{len(raw)} bytes")
        text = raw.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise InputError(field, "must be a readable UTF-8 (or gzip) text file", f"{path} ({exc.__class__.__name__})") from None
    require(text.strip() != "", field, "file is empty", str(path))
    return text


def read_json(path: str | os.PathLike, field: str) -> object:
    """Parse a JSON file, reporting malformed or truncated content in one line."""
    text = read_text(path, field)
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        msg = getattr(exc, "msg", "too deeply nested")
        where = f" at line {exc.lineno} column {exc.colno}" if hasattr(exc, "lineno") else ""
        raise InputError(field, f"must be valid JSON ({msg}{where})", str(path)) from None
