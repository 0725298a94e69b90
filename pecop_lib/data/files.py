"""The files of a dataset root: regular files only, text in UTF-8.

Every loader opens its annotation files, split files, videos and frames through these two
functions, so that what is not a regular file is refused *before it is opened*: a FIFO (named
pipe) would block the reader forever (``pecop doctor`` included), a device would be read without
end, a socket cannot be read at all. Text files (CSV, list and meta files) are read as UTF-8; a
UTF-8 byte order mark, as spreadsheet programs write it, is accepted and dropped (the values read
are the same as without it), any other encoding is refused, naming the first undecodable byte.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pecop_lib.data.errors import DataFormatError

BOM = b"\xef\xbb\xbf"
"""The UTF-8 byte order mark."""

_SPECIAL = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a folder"),
)


def kind_of(mode: int) -> str | None:
    """What a file mode describes when it is not a regular file (``None`` for a regular file)."""
    for test, name in _SPECIAL:
        if test(mode):
            return name
    return None if stat.S_ISREG(mode) else "not a regular file"


def regular_file(
    path: str | os.PathLike[str], what: str, *, error: type[DataFormatError] = DataFormatError,
    missing_fix: str = "check the dataset root and layout",
) -> Path:
    """``path`` if it is a regular file (links followed); never opens it.

    Args:
        path: The file.
        what: What the file is, for the message (e.g. ``"annotation file"``).
        error: The error type raised (:class:`DataFormatError` or a subclass).
        missing_fix: The fix named when the file does not exist.

    Raises:
        DataFormatError: (or ``error``) if the file is missing, unreadable, or a FIFO, socket, device or
            folder, naming the path and the fix.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist; {missing_fix}") from None
    except OSError as exc:
        raise error(f"{what} {path} cannot be read ({exc.strerror}); check its permissions") from exc
    kind = kind_of(mode)
    if kind is not None:
        raise error(
            f"{what} {path} is {kind}, not a regular file (reading it could block forever or never end); "
            "replace it with the real file"
        )
    return path


def read_text(path: str | os.PathLike[str], what: str) -> str:
    """The text of a regular file, decoded as UTF-8 (a leading byte order mark dropped).

    Raises:
        DataFormatError: If the file is not a regular file (see :func:`regular_file`) or is not UTF-8,
            naming the file, the byte offset and the fix.
    """
    data = regular_file(path, what).read_bytes()
    skip = len(BOM) if data.startswith(BOM) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = skip + exc.start
        raise DataFormatError(
            f"{what} {path} is not UTF-8 text (byte 0x{data[offset]:02x} at offset {offset}); "
            "save it again as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from exc
