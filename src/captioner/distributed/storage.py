"""Where a job reads and writes: local directories and object-store prefixes, through
pyarrow's filesystems, the same ones Ray's readers and writers use.

Paths are kept in the filesystem's own form (``/abs/dir/a.jpg``; ``bucket/prefix/a.jpg``
for S3): that is the ``path`` column Ray's ``read_binary_files`` gives, so the records'
paths, the listing and the resume's skip set all compare equal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.json as pajson
import pyarrow.parquet as pq

__all__ = ["Location", "OutputFormat", "list_files", "read_written", "resolve"]

logger = logging.getLogger(__name__)

OutputFormat = Literal["parquet", "jsonl"]


@dataclass(frozen=True)
class Location:
    """A directory or prefix: its filesystem and its path in that filesystem's form."""

    filesystem: pafs.FileSystem
    path: str


def resolve(uri: str, *, s3_endpoint: str | None = None) -> Location:
    """``uri`` (a local path, ``s3://bucket/prefix``, or any URI pyarrow reads) as a Location.

    Args:
        s3_endpoint: an S3-compatible store's address (``http://127.0.0.1:8333``) for
            ``s3://`` URIs; credentials come from the usual AWS variables, read by the
            AWS SDK inside pyarrow.
    """
    if s3_endpoint and uri.startswith("s3://"):
        endpoint = urlsplit(s3_endpoint if "://" in s3_endpoint else f"https://{s3_endpoint}")
        filesystem = pafs.S3FileSystem(
            endpoint_override=endpoint.netloc,
            scheme=endpoint.scheme,
            region="us-east-1",  # any region: the endpoint decides; skips a region lookup
        )
        return Location(filesystem, uri.removeprefix("s3://").rstrip("/"))
    filesystem, path = pafs.FileSystem.from_uri(
        uri if "://" in uri else str(Path(uri).expanduser().resolve())
    )
    return Location(filesystem, path.rstrip("/") or "/")


def list_files(location: Location) -> list[str]:
    """Every file under ``location``, recursively, sorted; hidden ones (``.name``) skipped.

    Every file is a candidate image: the actors judge the bytes, and a file that is not
    an image becomes an error row (reading millions of headers on the driver would not
    scale).
    """
    selector = pafs.FileSelector(location.path, recursive=True)
    infos = location.filesystem.get_file_info(selector)
    prefix = location.path.rstrip("/") + "/"
    return sorted(
        info.path
        for info in infos
        if info.type == pafs.FileType.File
        and not any(p.startswith(".") for p in info.path.removeprefix(prefix).split("/"))
    )


def read_written(location: Location, output_format: OutputFormat) -> pa.Table:
    """The ``path`` and ``status`` of every record in the output files under ``location``.

    A file that does not read whole was torn by a driver or a node that died while writing
    it (Ray writes local files in place); it is deleted, so that its images are captioned
    again and no reader of the output ever meets it. Missing ``location``: no records.
    """
    info = location.filesystem.get_file_info(location.path)
    if info.type == pafs.FileType.NotFound:
        return _empty()
    tables = []
    suffix = "." + output_format
    for path in list_files(location):
        if not path.endswith(suffix):
            continue
        try:
            tables.append(_read_file(location.filesystem, path, output_format))
        except pa.ArrowInvalid as exc:  # not OSError: a store that fails to answer
            logger.warning("deleting %s, torn by an earlier run (%s)", path, exc)
            location.filesystem.delete_file(path)
    return pa.concat_tables(tables) if tables else _empty()


def _read_file(filesystem: pafs.FileSystem, path: str, output_format: OutputFormat) -> pa.Table:
    columns = ["path", "status"]
    if output_format == "parquet":
        return pq.read_table(path, columns=columns, filesystem=filesystem)
    with filesystem.open_input_stream(path) as stream:
        data = stream.read()
    if not data:
        return _empty()
    if not data.endswith(b"\n"):
        raise pa.ArrowInvalid("its last line is not whole")
    return pajson.read_json(pa.BufferReader(data)).select(columns)


def _empty() -> pa.Table:
    return pa.table({"path": pa.array([], pa.string()), "status": pa.array([], pa.string())})
