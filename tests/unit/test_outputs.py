"""Output files: one record per image, durable, resumable after a torn write."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from captioner.errors import CaptionerError
from captioner.outputs import CSV_HEADER, ExistingOutputError, open_output
from captioner.results import Caption, ImageResult

GOOD = ImageResult('dir/a, "quoted".jpg', (Caption("a café ,\nnew line", -0.5), Caption("b", -2.0)))
BAD = ImageResult("dir/b.jpg", error="the image is empty (0 bytes)")


def _write(path: Path, results: list[ImageResult], on_existing: str = "refuse") -> None:
    writer, _ = open_output(path, on_existing)  # type: ignore[arg-type]
    for result in results:
        writer.write(result)
    writer.flush()
    writer.close()


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_each_format_round_trips_what_resume_needs(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"out{suffix}"
    _write(out, [GOOD, BAD])
    _, recorded = open_output(out, "resume")
    assert recorded.sources == {GOOD.source: True, BAD.source: False}
    assert recorded.failed == 1


def test_jsonl_records_are_the_result_records(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    _write(out, [GOOD, BAD])
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [GOOD.to_record(), BAD.to_record()]
    assert "café" in lines[0]  # UTF-8, not \u escapes
    assert ImageResult.from_record(json.loads(lines[0])) == GOOD


def test_csv_is_rfc4180_with_the_top_caption(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    _write(out, [GOOD, BAD])
    raw = out.read_bytes()
    assert raw.count(b"\r\n") == 3 and raw.endswith(b"\r\n")  # records end in CRLF
    rows = list(csv.reader(out.open(encoding="utf-8", newline="")))
    assert rows[0] == list(CSV_HEADER)
    assert rows[1] == [GOOD.source, "a café ,\nnew line", repr(GOOD.captions[0].probability), ""]
    assert rows[2] == [BAD.source, "", "", BAD.error]


def test_parquet_has_the_record_schema(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    _write(out, [GOOD, BAD])
    assert pq.read_table(out).to_pylist() == [GOOD.to_record(), BAD.to_record()]
    assert not (tmp_path / "out.parquet.journal.jsonl").exists()


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_torn_last_record_is_dropped_and_redone(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"out{suffix}"
    _write(out, [GOOD])
    whole = out.read_bytes()
    with out.open("ab") as stream:
        stream.write(b'{"path": "dir/c.jpg", "sta' if suffix == ".jsonl" else b"dir/c.jpg,a ca")
    writer, recorded = open_output(out, "resume")
    assert set(recorded.sources) == {GOOD.source}
    assert out.read_bytes() == whole  # the torn tail is gone before anything is appended
    writer.write(BAD)
    writer.close()
    _, recorded = open_output(out, "resume")
    assert recorded.sources == {GOOD.source: True, BAD.source: False}


def test_a_parquet_run_killed_before_the_end_resumes_from_its_journal(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    writer, _ = open_output(out)
    writer.write(GOOD)
    writer.flush()  # killed here: no Parquet file yet, the journal holds the record
    assert not out.exists()
    with pytest.raises(ExistingOutputError):
        open_output(out)
    writer, recorded = open_output(out, "resume")
    assert set(recorded.sources) == {GOOD.source}
    writer.write(BAD)
    writer.close()
    assert [r["path"] for r in pq.read_table(out).to_pylist()] == [GOOD.source, BAD.source]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_an_existing_output_is_refused_or_replaced(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"out{suffix}"
    _write(out, [GOOD])
    with pytest.raises(ExistingOutputError, match=r"--resume.*--overwrite"):
        open_output(out)
    _write(out, [BAD], "overwrite")
    _, recorded = open_output(out, "resume")
    assert recorded.sources == {BAD.source: False}


def test_an_unknown_suffix_names_the_formats(tmp_path: Path) -> None:
    with pytest.raises(CaptionerError, match=r"\.jsonl, \.csv, \.parquet"):
        open_output(tmp_path / "out.txt")


def test_resuming_a_file_captioner_did_not_write_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text('{"something": "else"}\n')
    with pytest.raises(CaptionerError, match="line 1"):
        open_output(out, "resume")
