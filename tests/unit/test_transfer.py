"""The resumable HTTP client, through the installer that uses it, against a misbehaving
server on 127.0.0.1: Range resumes, retries with backoff, stalls, sources that cannot be
reached, progress reports."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from captioner.download import install_model
from captioner.errors import (
    AssetError,
    DownloadError,
)
from support.downloads import (
    assert_installed,
    assert_no_work_left,
    install_old_model,
    serve,
    settings_for,
)
from support.http_fixtures import (
    Assets,
    AssetServer,
    Route,
    SilentServer,
    snapshot,
)


def test_dropped_connection_resumes_with_range(
    server: AssetServer, assets: Assets, model_dir: Path
) -> None:
    serve(server, assets, Route(assets.tarball, "drop_first"))
    install_model(settings_for(server, model_dir, assets), progress="off")
    assert_installed(model_dir, assets)
    tarball_requests = [r for r in server.requests if r.path == "/assets.tar.gz"]
    assert [r.range for r in tarball_requests] == [None, f"bytes={len(assets.tarball) // 2}-"]


def test_interrupted_download_resumes_on_the_next_run(
    server: AssetServer, assets: Assets, model_dir: Path
) -> None:
    serve(server, assets, Route(assets.tarball, "drop_first"))
    settings = settings_for(server, model_dir, assets, download_retries=0)
    with pytest.raises(AssetError, match="connection closed after"):
        install_model(settings, progress="off")
    assert not model_dir.exists()
    assert_no_work_left(model_dir)

    install_model(settings, progress="off")
    assert_installed(model_dir, assets)
    tarball_ranges = [r.range for r in server.requests if r.path == "/assets.tar.gz"]
    assert tarball_ranges == [None, f"bytes={len(assets.tarball) // 2}-"]
    # The vocabulary was whole after the first run: the second only confirms it (416).
    vocab_ranges = [r.range for r in server.requests if r.path == "/word_counts.txt"]
    assert vocab_ranges == [None, f"bytes={len(assets.vocab)}-"]


def test_server_errors_are_retried_with_backoff(
    server: AssetServer, assets: Assets, model_dir: Path
) -> None:
    serve(server, assets, Route(assets.tarball, "error_first", failures=2))
    settings = settings_for(server, model_dir, assets, download_retries=2, download_backoff_s=0.05)
    started = time.monotonic()
    install_model(settings, progress="off")
    assert time.monotonic() - started >= 0.05 + 0.1  # backoff doubles: 0.05 s, then 0.1 s
    assert_installed(model_dir, assets)
    assert server.paths_requested().count("/assets.tar.gz") == 3


def test_retries_are_bounded_and_leave_the_old_model(
    server: AssetServer, assets: Assets, model_dir: Path
) -> None:
    before = install_old_model(server, model_dir, assets)
    serve(server, assets, Route(assets.tarball, "error_first", failures=99))
    with pytest.raises(AssetError, match=r"HTTP 503 .*gave up after 2 attempts"):
        install_model(settings_for(server, model_dir, assets), force=True, progress="off")
    assert snapshot(model_dir) == before
    assert server.paths_requested().count("/assets.tar.gz") == 2
    assert_no_work_left(model_dir)


def test_stalled_server_times_out(server: AssetServer, assets: Assets, model_dir: Path) -> None:
    before = install_old_model(server, model_dir, assets)
    serve(server, assets, Route(assets.tarball, "stall"))
    settings = settings_for(server, model_dir, assets, download_timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(AssetError, match=r"stalled: no data for 0.3 s .*gave up after 2"):
        install_model(settings, force=True, progress="off")
    assert time.monotonic() - started < 3
    assert snapshot(model_dir) == before
    assert_no_work_left(model_dir)


def test_sources_that_never_answer_fail_within_the_deadline(
    silent: SilentServer, server: AssetServer, assets: Assets, model_dir: Path
) -> None:
    # Four tarball sources and the vocabulary's accept the connection and never answer.
    tarballs = [silent.url(f"/mirror-{n}/assets.tar.gz") for n in range(4)]
    settings = settings_for(
        server,
        model_dir,
        assets,
        download_urls=tarballs,
        vocab_url=silent.url("/word_counts.txt"),
        download_timeout_s=30.0,
        download_retries=4,
        download_deadline_s=2.0,
    )
    started = time.monotonic()
    with pytest.raises(DownloadError) as caught:
        install_model(settings, progress="off")
    assert time.monotonic() - started < 2.0 + 1.0
    message = str(caught.value)
    for url in [silent.url("/word_counts.txt"), *tarballs]:
        assert message.count(url) == 1, message
    assert message.count("no answer within 0.4 s") == 5
    assert silent.accepted == 5  # every source was asked, none twice
    assert snapshot(model_dir) == {}


def test_a_silent_source_leaves_time_for_the_next(
    silent: SilentServer, server: AssetServer, assets: Assets, model_dir: Path
) -> None:
    serve(server, assets)
    sources = [silent.url("/assets.tar.gz"), server.url("/assets.tar.gz")]
    settings = settings_for(
        server,
        model_dir,
        assets,
        download_urls=sources,
        download_timeout_s=30.0,
        download_deadline_s=1.5,
    )
    started = time.monotonic()
    install_model(settings, progress="off")
    assert time.monotonic() - started < 1.5 + 1.0
    assert_installed(model_dir, assets)


def test_a_slow_file_is_not_cut_off_by_the_deadline(
    server: AssetServer, assets: Assets, model_dir: Path
) -> None:
    # The deadline is for starting to send: a file arriving with pauses longer than a
    # source's share, but shorter than the stall timeout, is received in one request.
    serve(server, assets, Route(assets.tarball, "pause", pause_s=0.6))
    settings = settings_for(
        server, model_dir, assets, download_timeout_s=5.0, download_deadline_s=0.4
    )
    install_model(settings, progress="off")
    assert_installed(model_dir, assets)
    assert server.paths_requested().count("/assets.tar.gz") == 1


def test_log_progress_says_size_percent_and_rate(
    server: AssetServer, assets: Assets, model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    serve(server, assets)
    caplog.set_level("INFO", logger="captioner.transfer")
    install_model(settings_for(server, model_dir, assets), progress="log")
    kib = f"{len(assets.tarball) / 1024:.1f} KiB"
    assert f"assets.tar.gz: downloading {kib}" in caplog.text
    assert f"assets.tar.gz: {kib} of {kib} (100%), " in caplog.text
    assert "/s" in caplog.text


def test_bar_progress_shows_size_and_rate(
    server: AssetServer, assets: Assets, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    serve(server, assets)
    install_model(settings_for(server, model_dir, assets), progress="bar")
    err = capsys.readouterr().err
    assert "assets.tar.gz: 100%" in err
    assert "B/s" in err
