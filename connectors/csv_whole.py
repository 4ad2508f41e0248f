"""A small, plain log read whole by Arrow's CSV parser: the frame pandas would read.

pandas' chunked reader takes about 8 ms for a NAB file (22,695 rows), Arrow's
parser 2.5 ms, its ISO times then parsing faster too; a replay of one such file
spends about 15% less time (docs/benchmarks.md). Arrow is used only where it
reads exactly what pandas would (``tests/connectors/test_csv_whole.py`` compares
the two frames); anything else returns None and goes through pandas, which also
says what is wrong with a file:

* the layout: no key column, no columns but the time and the values, a time in
  one column, a one-character separator, no malformed first row;
* the bytes: at most ``WHOLE_BYTES``; no quote (a quoted field may span lines),
  no blank line (Arrow refuses one among the data: a row of one field), no lone
  carriage return, no byte-order mark, UTF-8;
* the cells: every row has every field, every value cell is a finite number
  (an empty or ``nan`` cell, text, ``inf``: pandas), no time cell is one of
  the texts pandas reads as missing.

Line n of the data is then row n - first_line, as in pandas' frame.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as arrow_csv
from pandas._libs.parsers import STR_NA_VALUES

from connectors.csv_formats import Layout

WHOLE_BYTES = 16 * 2**20  # past this, fixed costs are noise and pandas' chunks bound memory
BOM = b"\xef\xbb\xbf"
PANDAS_MISSING = pa.array(sorted(STR_NA_VALUES))  # the cells pandas reads as missing


def whole_frame(layout: Layout) -> pd.DataFrame | None:
    """The file's rows as ``pd.read_csv(..., **layout.read_options())`` reads them, or
    None where Arrow might read them otherwise (then pandas reads the file)."""
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
    columns = {*layout.time.columns, *layout.values}
    return (
        layout.key is None
        and layout.time.kind in ("iso", "epoch")
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


def _parsed(layout: Layout, data: bytes) -> pa.Table | None:
    """Every cell typed, nothing read as missing; None where Arrow cannot."""
    types = {name: pa.float64() if name in layout.values else pa.string() for name in layout.names}
    try:
        return arrow_csv.read_csv(
            pa.py_buffer(data),
            read_options=arrow_csv.ReadOptions(
                column_names=list(layout.names), skip_rows=layout.skip, use_threads=False
            ),
            parse_options=arrow_csv.ParseOptions(delimiter=layout.sep, ignore_empty_lines=False),
            convert_options=arrow_csv.ConvertOptions(
                column_types=types, null_values=[], strings_can_be_null=False
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None


def _plain_cells(layout: Layout, table: pa.Table) -> bool:
    finite = all(pc.all(pc.is_finite(table[name])).as_py() for name in layout.values)
    missing = any(pc.any(pc.is_in(table[name], PANDAS_MISSING)).as_py()
                  for name in layout.time.columns)  # fmt: skip
    return finite and not missing
