"""The caption records as an Arrow table: the columns every Ray output file has.

One schema, so a Parquet file of one block and a JSON Lines file of another read back as
the same table, and an all-error block (no captions at all) still has the ``captions``
column's type rather than Arrow's guess of ``null``.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from captioner.results import ImageResult

__all__ = ["RECORD_SCHEMA", "records_table"]

RECORD_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field(
            "captions",
            pa.list_(
                pa.struct(
                    [
                        pa.field("caption", pa.string()),
                        pa.field("probability", pa.float64()),
                        pa.field("logprob", pa.float64()),
                    ]
                )
            ),
        ),
        pa.field("error", pa.string(), nullable=True),
    ]
)


def records_table(results: Sequence[ImageResult]) -> pa.Table:
    """``results`` as rows of :data:`RECORD_SCHEMA`, in order (``ImageResult.to_record``)."""
    return pa.Table.from_pylist([r.to_record() for r in results], schema=RECORD_SCHEMA)
