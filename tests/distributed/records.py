"""Reading a job's DEST back as a reader of its files would: every record, whole."""

from __future__ import annotations

import json
from typing import Any

import pyarrow.fs as pafs
import pyarrow.parquet as pq


def read_records(
    filesystem: pafs.FileSystem, directory: str, output_format: str
) -> list[dict[str, Any]]:
    """Every record in the ``.parquet`` or ``.jsonl`` files under ``directory``."""
    records: list[dict[str, Any]] = []
    infos = filesystem.get_file_info(pafs.FileSelector(directory, recursive=True))
    files = sorted(i.path for i in infos if i.path.endswith("." + output_format))
    assert files, f"no {output_format} files in {directory}"
    for path in files:
        if output_format == "parquet":
            records += pq.read_table(path, filesystem=filesystem).to_pylist()
        else:
            with filesystem.open_input_stream(path) as stream:
                records += [json.loads(line) for line in stream.read().decode().splitlines()]
    return records


def local_records(directory: str, output_format: str) -> list[dict[str, Any]]:
    """:func:`read_records` of a local directory."""
    return read_records(pafs.LocalFileSystem(), directory, output_format)
