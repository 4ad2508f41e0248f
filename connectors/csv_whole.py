"""A small, plain log read whole by Arrow's CSV parser: the rows pandas would read.

pandas' chunked reader takes about 8 ms for a NAB file (22,695 rows), Arrow's
parser 2.5 ms; a long log of 500,000 readings about 105 against 60 ms. Arrow is
used only where it reads what pandas would (``tests/connectors/test_csv_whole.py``
replays files both ways and compares every batch); anything else returns None
and goes through pandas, which also says what is wrong with a file:

* the layout: no columns but the time, the values and a key, a time in one
  column, a one-character separator, no malformed first row;
* the bytes: at most ``WHOLE_BYTES``; no quote (a quoted field may span lines),
  no blank line (Arrow refuses one among the data: a row of one field), no lone
  carriage return, no byte-order mark, UTF-8;
* the cells: every row has every field, every value cell is a finite number
  (an empty or ``nan`` cell, text, ``inf``: pandas), no time or key cell is
  one of the texts pandas reads as missing.

The key, and a long log's time, are read as categories (pandas reads them as
text; this module's caller factorizes the key, and ``timestamps.parse`` parses
each distinct time once: the same keys and times). Line n of the data is then row
n - first_line, as in pandas' frame.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as arrow_csv
from pandas._libs.parsers import STR_NA_VALUES

from connectors.csv_formats import Layout

# past this, a file's fixed costs are noise and pandas' chunks bound memory (a whole
# file's bytes, table and frame take about three times its size)
WHOLE_BYTES = 32 * 2**20
BOM = b"\xef\xbb\xbf"
PANDAS_MISSING = pa.array(sorted(STR_NA_VALUES))  # the cells pandas reads as missing
CATEGORIES = pa.dictionary(pa.int32(), pa.string())


def whole_frame(layout: Layout) -> pd.DataFrame | None:
    """The file's rows as ``pd.read_csv(..., **layout.read_options())`` reads them (the
    key as categories), or None where Arrow might read them otherwise."""
    if not _plain_layout(layout):
        return None
    try:
        if layout.path.stat().st_size > WHOLE_BYTES:
            return None
        data = layout.path.read_bytes()
    except OSError:
        return None  # pandas reports it
    if not _plain_bytes(data, layout.skip):
        return None
    table = _parsed(layout, data)
    if table is None or not table.num_rows or not _plain_cells(layout, table):
        return None
    return table.to_pandas()


def _plain_layout(layout: Layout) -> bool:
    columns = {*layout.time.columns, *layout.values, *([layout.key] if layout.key else [])}
    return (
        layout.time.kind in ("iso", "epoch")
        and len(layout.time.columns) == 1
        and set(layout.names) == columns
        and len(layout.names) == len(columns)
        and len(layout.sep) == 1
        and not layout.head_malformed
    )


def _plain_bytes(data: bytes, skip: int) -> bool:
    """No quote, BOM or lone carriage return; no blank line among the ``skip`` lines
    before the data (a blank data line is a row of one field: Arrow refuses it)."""
    start = 0
    for _ in range(skip):
        end = data.find(b"\n", start)
        if end < 0 or not data[start:end].rstrip(b"\r"):
            return False  # no data, or a blank line
        start = end + 1
    return not (
        b'"' in data
        or data.startswith(BOM)
        or (b"\r" in data and data.count(b"\r") != data.count(b"\r\n"))
    )


def _types(layout: Layout) -> dict[str, pa.DataType]:
    """Each column's Arrow type: a value is a float, text as pandas reads it (text or
    categories), the key as categories."""
    as_read = layout.read_options()["dtype"]
    types = {name: pa.float64() for name in layout.values}
    for name in as_read:
        types[name] = pa.string()
    if layout.key:
        types[layout.key] = CATEGORIES
    if layout.format == "long" and layout.time.kind in ("iso", "epoch"):
        # many streams share a step: each distinct time is parsed once, and kept once
        types[layout.time.columns[0]] = CATEGORIES
    return types


def _parsed(layout: Layout, data: bytes) -> pa.Table | None:
    """Every cell typed, nothing read as missing; None where Arrow cannot."""
    try:
        return arrow_csv.read_csv(
            pa.py_buffer(data),
            read_options=arrow_csv.ReadOptions(
                column_names=list(layout.names), skip_rows=layout.skip, use_threads=False
            ),
            parse_options=arrow_csv.ParseOptions(delimiter=layout.sep, ignore_empty_lines=False),
            convert_options=arrow_csv.ConvertOptions(
                column_types=_types(layout), null_values=[], strings_can_be_null=False
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None


def _plain_cells(layout: Layout, table: pa.Table) -> bool:
    if not all(pc.all(pc.is_finite(table[name])).as_py() for name in layout.values):
        return False
    text = [*layout.time.columns, *([layout.key] if layout.key else [])]
    if any(pc.any(pc.is_in(_distinct(table[name]), PANDAS_MISSING)).as_py() for name in text):
        return False
    return True


def _distinct(column: pa.ChunkedArray) -> pa.Array:
    """A text column's cells, or a categories column's categories (of every chunk)."""
    if not pa.types.is_dictionary(column.type):
        return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return pa.concat_arrays(
        [chunk.dictionary for chunk in column.chunks] or [pa.array([], pa.string())]
    )
