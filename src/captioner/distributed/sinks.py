"""Writing the records into DEST: Parquet with Ray's own writer, JSON Lines with a sink of
ours, each file written by one of Ray's write tasks as the records stream in.

Ray's ``write_json`` goes through pandas, which rounds floats to 10 digits by default (15 at
most) and escapes every ``/`` of a path; the sink here writes each record as ``json.dumps``
does, so a logprob reads back as the very float the engine gave, and a path as it is.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ray.data.block import BlockAccessor
from ray.data.datasource import BlockBasedFileDatasink

if TYPE_CHECKING:
    import pyarrow as pa
    from ray.data import Dataset

    from captioner.distributed.storage import Location, OutputFormat

__all__ = ["JsonLinesDatasink", "write_records"]


class JsonLinesDatasink(BlockBasedFileDatasink):
    """One ``.jsonl`` file per write task: one record a line, UTF-8."""

    def __init__(self, location: Location) -> None:
        super().__init__(location.path, filesystem=location.filesystem, file_format="jsonl")

    def write_block_to_file(self, block: BlockAccessor, file: pa.NativeFile) -> None:
        """Write ``block``'s rows, each a whole line."""
        rows = block.to_arrow().to_pylist()
        lines = (json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        file.write("".join(lines).encode())


def write_records(records: Dataset, dest: Location, output_format: OutputFormat) -> None:
    """Run the job by writing ``records`` into ``dest`` (Ray executes a dataset on write)."""
    if output_format == "parquet":
        records.write_parquet(dest.path, filesystem=dest.filesystem)
    else:
        records.write_datasink(JsonLinesDatasink(dest))
