"""Where a collection's results go: JSON Lines, CSV or Parquet files that survive a kill.

Every writer takes :class:`~captioner.results.ImageResult` s one at a time, and makes what
it has written durable at each :meth:`ResultWriter.flush` (the callers flush once a batch):
a run killed at any moment (SIGKILL, power loss) leaves a file that is valid up to its
last whole record. Opening an existing output for ``resume`` reads the sources it already
holds, drops a torn last record, and appends after it, so that however often a run is
killed and resumed, every image is recorded exactly once.

- ``.jsonl``: one :meth:`ImageResult.to_record` object a line (UTF-8).
- ``.csv``: ``path,caption,probability,error`` with the top caption, ready to paste as
  alt text (RFC 4180: CRLF line ends, fields quoted when needed; UTF-8).
- ``.parquet``: the JSON Lines fields in a typed table (needs pyarrow: the ``parquet``
  extra). A Parquet file is only readable once its footer is written, so records go to
  a journal beside it (``NAME.parquet.journal.jsonl``) as they come, and the Parquet file
  is (re)written from its old rows and the journal when the run ends, even by Ctrl-C.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol

from captioner.errors import CaptionerError
from captioner.results import ImageResult

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "FORMATS",
    "ExistingOutputError",
    "OnExisting",
    "Recorded",
    "ResultWriter",
    "StdoutWriter",
    "open_output",
    "record_schema",
]

FORMATS = (".jsonl", ".csv", ".parquet")
CSV_HEADER = ("path", "caption", "probability", "error")
OnExisting = Literal["refuse", "resume", "overwrite"]
_JOURNAL_SUFFIX = ".journal.jsonl"
_PARQUET_ROWS_PER_GROUP = 10_000


class ExistingOutputError(CaptionerError):
    """The output exists and the caller said neither resume nor overwrite."""


class ResultWriter(Protocol):
    """Takes results one at a time; durable at each flush; finished by close."""

    def write(self, result: ImageResult) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


@dataclass
class Recorded:
    """What an output already holds, read when resuming.

    Attributes:
        sources: the names recorded, each with whether it was captioned.
    """

    sources: dict[str, bool] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        """How many recorded images have an error row."""
        return sum(not ok for ok in self.sources.values())


def open_output(path: Path, on_existing: OnExisting = "refuse") -> tuple[ResultWriter, Recorded]:
    """A writer for ``path`` (its format by suffix) and what the file already records.

    Raises:
        ExistingOutputError: ``path`` (or its journal) exists and ``on_existing`` is refuse.
        CaptionerError: an unknown suffix, a damaged output to resume, pyarrow missing.
    """
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise CaptionerError(
            f"{path}: the output format is chosen by the suffix: {', '.join(FORMATS)}"
        )
    journal = path.with_name(path.name + _JOURNAL_SUFFIX)
    leftovers = [p for p in (path, journal) if p.exists() and (p == path or suffix == ".parquet")]
    if leftovers and on_existing == "refuse":
        raise ExistingOutputError(
            f"{leftovers[0]} already exists: add --resume to finish that run, "
            "or --overwrite to start again"
        )
    if on_existing == "overwrite":
        for leftover in leftovers:
            leftover.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".jsonl":
        recorded = _resume_jsonl(path)
        return _JsonlWriter(path), recorded
    if suffix == ".csv":
        recorded = _resume_csv(path)
        return _CsvWriter(path, header=not recorded.sources and _is_empty(path)), recorded
    recorded = _read_parquet_sources(path)
    recorded.sources.update(_resume_jsonl(journal).sources)
    return _ParquetWriter(path, journal), recorded


def record_schema() -> pa.Schema:
    """The Parquet (Arrow) schema of :meth:`ImageResult.to_record`, shared with Ray's output."""
    import pyarrow as pa

    caption = pa.struct(
        [("caption", pa.string()), ("probability", pa.float64()), ("logprob", pa.float64())]
    )
    return pa.schema(
        [
            ("path", pa.string()),
            ("status", pa.string()),
            ("captions", pa.list_(caption)),
            ("error", pa.string()),
        ]
    )


class StdoutWriter:
    """No output file: results on standard output, as ``captioner caption`` always printed.

    Readable: the path, then the ranked captions with probability and logprob, errors on
    stderr. ``as_json``: one JSON object per image per line, in the shape this command has
    always printed (``{"image", "predictions": [{"index", "caption", "probability",
    "logprob"}]}``, or ``{"image", "error"}``), unlike the output files' records.
    """

    def __init__(self, as_json: bool) -> None:
        self._as_json = as_json

    def write(self, result: ImageResult) -> None:
        if self._as_json:
            print(json.dumps(_stdout_object(result)), flush=True)
        elif not result.ok:
            print(f"{result.source}: error: {result.error}", file=sys.stderr, flush=True)
        else:
            lines = [result.source] + [
                f"  {rank}. p={c.probability:.6g}  logprob={c.logprob:.4f}  {c.text}"
                for rank, c in enumerate(result.captions, start=1)
            ]
            print("\n".join(lines), flush=True)

    def flush(self) -> None:
        sys.stdout.flush()

    def close(self) -> None:
        self.flush()


def _stdout_object(result: ImageResult) -> dict[str, Any]:
    if not result.ok:
        return {"image": result.source, "error": result.error}
    predictions = [
        {"index": str(rank), "caption": c.text, "probability": c.probability, "logprob": c.logprob}
        for rank, c in enumerate(result.captions)
    ]
    return {"image": result.source, "predictions": predictions}


class _AppendingFile:
    """An output file opened for appending, made durable (fsync) at each flush."""

    def __init__(self, path: Path, newline: str | None = None) -> None:
        self._file: IO[str] = path.open("a", encoding="utf-8", newline=newline)

    def flush(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self.flush()
        self._file.close()


class _JsonlWriter(_AppendingFile):
    def __init__(self, path: Path) -> None:
        super().__init__(path)

    def write(self, result: ImageResult) -> None:
        # One write per record: a record is torn only if the process dies inside it.
        self._file.write(json.dumps(result.to_record(), ensure_ascii=False) + "\n")


class _CsvWriter(_AppendingFile):
    def __init__(self, path: Path, *, header: bool) -> None:
        super().__init__(path, newline="")
        if header:
            self._file.write(_csv_line(CSV_HEADER))

    def write(self, result: ImageResult) -> None:
        best = result.best
        probability = repr(best.probability) if best else ""
        # One write per record, as for JSON Lines.
        self._file.write(
            _csv_line((result.source, best.text if best else "", probability, result.error or ""))
        )


def _csv_line(values: tuple[str, ...]) -> str:
    """One RFC 4180 record: fields quoted when needed, CRLF at the end."""
    line = io.StringIO()
    csv.writer(line, lineterminator="\r\n").writerow(values)
    return line.getvalue()


class _ParquetWriter:
    """Records into the journal as they come; the Parquet file rewritten from both at close."""

    def __init__(self, path: Path, journal: Path) -> None:
        _import_pyarrow(path)
        self._path = path
        self._journal_path = journal
        self._journal = _JsonlWriter(journal)

    def write(self, result: ImageResult) -> None:
        self._journal.write(result)

    def flush(self) -> None:
        self._journal.flush()

    def close(self) -> None:
        """Old rows and the journal's into a new file, renamed over the old; journal gone."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._journal.close()
        schema = record_schema()
        staging = self._path.with_name(self._path.name + ".partial")
        with pq.ParquetWriter(staging, schema) as out:
            if self._path.exists():
                for group in pq.ParquetFile(self._path).iter_batches(_PARQUET_ROWS_PER_GROUP):
                    out.write_batch(group)
            for rows in _journal_rows(self._journal_path):
                out.write_table(pa.Table.from_pylist(rows, schema=schema))
        os.replace(staging, self._path)
        self._journal_path.unlink()


def _journal_rows(journal: Path) -> Iterator[list[dict[str, Any]]]:
    """The journal's records, a row group's worth at a time."""
    rows: list[dict[str, Any]] = []
    with journal.open(encoding="utf-8") as stream:
        for line in stream:
            rows.append(json.loads(line))
            if len(rows) == _PARQUET_ROWS_PER_GROUP:
                yield rows
                rows = []
    if rows:
        yield rows


def _is_empty(path: Path) -> bool:
    return not path.exists() or path.stat().st_size == 0


def _drop_torn_tail(path: Path) -> None:
    """Cut the file after its last line end: a record cut short by a kill is redone."""
    if not path.exists():
        return
    with path.open("rb+") as stream:
        data = stream.read()
        keep = data.rfind(b"\n") + 1
        if keep < len(data):
            stream.truncate(keep)


def _resume_jsonl(path: Path) -> Recorded:
    """The sources a JSON Lines output (or journal) records; a torn last line dropped."""
    recorded = Recorded()
    if not path.exists():
        return recorded
    _drop_torn_tail(path)
    with path.open(encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            try:
                record = json.loads(line)
                recorded.sources[str(record["path"])] = record["status"] == "ok"
            except (ValueError, KeyError, TypeError) as exc:
                raise CaptionerError(
                    f"{path}, line {number}: not a captioner record ({exc}); "
                    "resume only a file captioner wrote, or use --overwrite"
                ) from exc
    return recorded


def _resume_csv(path: Path) -> Recorded:
    """The sources a CSV output records; a torn last record dropped."""
    recorded = Recorded()
    if not path.exists():
        return recorded
    _drop_torn_tail(path)
    with path.open(encoding="utf-8", newline="") as stream:
        rows = csv.reader(stream, strict=True)
        try:
            header = next(rows, None)
            if header is not None and tuple(header) != CSV_HEADER:
                raise CaptionerError(
                    f"{path}: its header is not {','.join(CSV_HEADER)}; "
                    "resume only a file captioner wrote, or use --overwrite"
                )
            for row in rows:
                recorded.sources[row[0]] = not row[3]
        except (csv.Error, IndexError) as exc:
            raise CaptionerError(
                f"{path}: a damaged record ({exc}); use --overwrite to start again"
            ) from exc
    return recorded


def _read_parquet_sources(path: Path) -> Recorded:
    """The sources a finished Parquet output records."""
    recorded = Recorded()
    if not path.exists():
        return recorded
    _import_pyarrow(path)
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["path", "status"])
    for source, status in zip(
        table.column("path").to_pylist(), table.column("status").to_pylist(), strict=True
    ):
        recorded.sources[source] = status == "ok"
    return recorded


def _import_pyarrow(path: Path) -> None:
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError as exc:
        raise CaptionerError(
            f"{path}: writing Parquet needs pyarrow: pip install 'captioner[parquet]' "
            "(or choose .jsonl or .csv)"
        ) from exc
