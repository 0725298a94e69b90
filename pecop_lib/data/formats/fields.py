"""Annotation field schemas: the type, range and integrality of every numeric field of a format.

Each format module declares its fields once (``MTL_AQA_FIELDS``, ``FINEDIVING_FIELDS``,
``JIGSAWS_FIELDS``, ``PD4T_FIELDS``) and checks every record with :func:`check_fields` when it
loads; ``pecop doctor`` opens the datasets through the same loaders, so it applies the same
schema without training. What every field must be, whatever its range:

* a number (a bool, a string or ``None`` is not one);
* finite (NaN and infinities are refused everywhere: one NaN score turns a Spearman or a loss into NaN);
* a whole number where the format counts in whole units (frame numbers, UPDRS scores, JIGSAWS
  sub-scores): ``3.5`` is refused, never truncated to ``3``.

A value outside the field's range raises, except where a field is declared ``outside="warn"``
with the reason (the released MTL-AQA file has one judge score of 45.0, a typo for 4.5 that does
not change the final score): those are kept as published and reported with a warning naming the
record. Every message names the file, the record, the field and the value, and the fix.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any, Literal

import numpy as np

from pecop_lib.data.errors import DataFormatError

FIX = "correct the record or restore the released annotation file"


@dataclass(frozen=True)
class Field:
    """One numeric field of an annotation record.

    Attributes:
        name: The field's key in the record.
        low, high: The accepted range (``None``: unbounded); ``low`` is exclusive when ``low_open``.
        low_open: Exclude ``low`` itself (a difficulty of 0 is no dive).
        integer: The value must be a whole number.
        count: The field is a sequence of exactly ``count`` numbers (``None``: one number; 0: any
            non-zero length).
        required: The record must hold the field.
        outside: ``"error"`` or ``"warn"`` for a value outside the range (type, finiteness and
            integrality are always errors).
    """

    name: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    integer: bool = False
    count: int | None = None
    required: bool = True
    outside: Literal["error", "warn"] = "error"

    def range_text(self) -> str:
        """The range as an interval, e.g. ``(0, 5]`` or ``>= 0``."""
        if self.high is None:
            return "unbounded" if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
        low = "-inf" if self.low is None else f"{self.low:g}"
        return f"{'(' if self.low_open else '['}{low}, {self.high:g}]"


def _is_number(value: Any) -> bool:
    return isinstance(value, (Real, np.number)) and not isinstance(value, (bool, np.bool_))


def parse_number(text: str, name: str, where: str) -> int | float:
    """A number written in a text file (CSV cell, meta-file column), checked by :func:`check_value` after.

    Returns:
        An ``int`` for an integer literal (``"7"``), else a ``float`` (``"3.5"``, ``"nan"``).

    Raises:
        DataFormatError: If ``text`` is not a number, naming the place, the field and the text.
    """
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise DataFormatError(f"{where}: {name} {text!r} is not a number; {FIX}") from None


def check_value(field: Field, value: Any, where: str, label: str | None = None) -> float | int:
    """One number of ``field``: a finite number, whole where required, inside the range.

    Args:
        field: Its schema entry.
        value: The value read.
        where: ``"<file>: record <key>"`` (or ``"<file>:<line>"``).
        label: How the message names the value (default: the field's name; ``judge_scores[3]`` for an element).

    Returns:
        The value as ``int`` (integer fields) or ``float``.

    Raises:
        DataFormatError: Naming ``where``, the field and the value.
    """
    label = label or field.name
    if not _is_number(value):
        raise DataFormatError(f"{where}: {label} is {value!r} ({type(value).__name__}), not a number; {FIX}")
    number = float(value)
    if not math.isfinite(number):
        raise DataFormatError(f"{where}: {label} is {number} (not a finite number); {FIX}")
    if field.integer and number != round(number):
        raise DataFormatError(f"{where}: {label} {value} is not a whole number (the format counts it in whole "
                              f"units; it is never truncated); {FIX}")
    below = field.low is not None and (number <= field.low if field.low_open else number < field.low)
    above = field.high is not None and number > field.high
    if below or above:
        message = f"{where}: {label} {value} outside {field.range_text()}"
        if field.outside == "error":
            raise DataFormatError(f"{message}; {FIX}")
        warnings.warn(f"{message} (kept as published: annotation noise)", stacklevel=3)
    return int(round(number)) if field.integer else number


def check_field(field: Field, value: Any, where: str) -> Any:
    """A field's value (one number, or ``count`` numbers) checked by :func:`check_value`.

    Returns:
        The number, or a tuple of numbers for a sequence field.
    """
    if field.count is None:
        return check_value(field, value, where)
    values = np.asarray(value, dtype=object) if not isinstance(value, np.ndarray) else value
    if values.ndim != 1 or (field.count and len(values) != field.count) or len(values) == 0:
        wanted = f"{field.count} numbers" if field.count else "a non-empty sequence of numbers"
        shown = values.tolist() if values.size <= 12 else f"shape {values.shape}"
        raise DataFormatError(f"{where}: {field.name} {shown} must be {wanted}; {FIX}")
    if isinstance(values, np.ndarray) and values.dtype != object and np.issubdtype(values.dtype, np.number):
        return _check_array(field, values, where)
    return tuple(check_value(field, v, where, f"{field.name}[{i}]") for i, v in enumerate(values.tolist()))


def _check_array(field: Field, values: np.ndarray, where: str) -> tuple:
    """A numeric array checked at once (long label arrays); a bad element is then named by :func:`check_value`
    (the first one raises; where the range only warns, every element is checked so that each warns)."""
    floats = values.astype(np.float64)
    bad = ~np.isfinite(floats)
    if field.integer:
        bad |= np.where(np.isfinite(floats), floats != np.round(floats), False)
    if field.low is not None:
        bad |= floats <= field.low if field.low_open else floats < field.low
    if field.high is not None:
        bad |= floats > field.high
    if not bad.any():
        return tuple(values.astype(np.int64).tolist() if field.integer else floats.tolist())
    if field.outside == "error":
        first = int(np.flatnonzero(bad)[0])
        check_value(field, values[first].item(), where, f"{field.name}[{first}]")  # raises, naming the value
    return tuple(check_value(field, v, where, f"{field.name}[{i}]") for i, v in enumerate(values.tolist()))


def check_fields(record: Mapping[str, Any], fields: Sequence[Field], where: str) -> dict[str, Any]:
    """Check every field of ``record`` that the schema declares.

    Args:
        record: The record (a dict, or a positional record mapped to its field names).
        fields: The format's schema.
        where: ``"<file>: record <key>"``, the message's prefix.

    Returns:
        ``{name: checked value}`` for the fields present.

    Raises:
        DataFormatError: For a missing required field or a bad value, naming ``where``.
    """
    missing = [f.name for f in fields if f.required and f.name not in record]
    if missing:
        raise DataFormatError(f"{where} lacks field(s) {missing}; {FIX}")
    return {f.name: check_field(f, record[f.name], where) for f in fields if f.name in record}
