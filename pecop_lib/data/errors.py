"""The one error type of the data room: bad files, layouts, records and videos."""

from __future__ import annotations


class DataFormatError(ValueError):
    """A dataset file, record or video is missing, malformed or out of range.

    The message always names the file (and the record key where there is one) and says how
    to fix the problem.
    """


class VideoDecodeError(DataFormatError):
    """A video file or frame folder is empty, corrupt or shorter than required."""


class UnsafePickleError(DataFormatError):
    """A pickle asked for a global outside the allow-list (it would execute code)."""
