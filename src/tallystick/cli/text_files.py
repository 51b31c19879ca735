"""Read the text files that CLI commands take, with a one-line error for other encodings."""

from __future__ import annotations

from pathlib import Path


class NotUtf8Error(ValueError):
    """A file that is not UTF-8 text; the message names the file and the first bad line."""


def not_utf8_message(path: Path, line: int) -> str:
    return f"{path}:{line}: the file is not UTF-8 text; save it as UTF-8 and try again"


def read_utf8(path: Path) -> str:
    """Return the text of `path`, without the byte order mark that Excel and Notepad write.

    Raise NotUtf8Error for bytes that are not UTF-8, and OSError when the file cannot be read.
    """
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise NotUtf8Error(not_utf8_message(path, line)) from None
