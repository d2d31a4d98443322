"""The downloader against a real HTTP server on 127.0.0.1 serving tarballs in the real layout.

The pinned digests are replaced by the test tarball's own through the public settings
(``asset_sha512``, ``vocab_sha256``), exactly as for a private mirror. After every failure
the model directory must be exactly as before.
"""

from __future__ import annotations

import json
import logging
import os
import runpy
import signal
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from filelock import FileLock

from captioner.assets import DEMO_MODEL_DIR, PINNED_ASSET_SHA512, model_files_in
from captioner.cli import cli
from captioner.download import ensure_model, install_model
from captioner.errors import (
    AssetError,
    ChecksumMismatchError,
    OfflineError,
    UnsafeArchiveError,
)
from support.downloads import (
    assert_installed,
    assert_no_work_left,
    install_old_model,
    serve,
    settings_for,
)
from support.http_fixtures import (
    MEMBER_NAMES,
    Assets,
    AssetServer,
    Route,
    make_assets,
    snapshot,
    tar_gz,
)

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "download_checkpoint.py"


def test_test_tarball_has_the_pinned_layout(assets: Assets) -> None:
    assert set(MEMBER_NAMES) == set(PINNED_ASSET_SHA512) == set(assets.members)


def test_download_installs_every_verified_file(
    server: AssetServer, assets: Assets, model_dir: Path
) -> None:
    serve(server, assets)
    files = install_model(settings_for(server, model_dir, assets), progress="off")
    assert files == model_files_in(model_dir.absolute())
    assert_installed(model_dir, assets)
    assert server.paths_requested() == ["/word_counts.txt", "/assets.tar.gz"]


def test_installed_model_is_readable_by_other_users(
    server: AssetServer, assets: Assets, model_dir: Path
) -> None:
    # An image built as root is served as another uid: the model must not be private.

    umask = os.umask(0o022)
    try:
        serve(server, assets)
        install_model(settings_for(server, model_dir, assets), progress="off")
    finally:
        os.umask(umask)
    for path in [model_dir, *model_dir.rglob("*")]:
        mode = path.stat().st_mode & 0o777
        assert mode & 0o044 == 0o044, f"{path} is {oct(mode)}"


def test_members_that_are_not_pinned_are_not_kept(server: AssetServer, model_dir: Path) -> None:
    assets = make_assets(extra={"checkpoint/README": b"hello", "notes.txt": b"x"})
    serve(server, assets)
    install_model(settings_for(server, model_dir, assets), progress="off")
    assert_installed(model_dir, assets)


def test_missing_first_source_falls_back_to_the_mirror(
    server: AssetServer, assets: Assets, model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    serve(server, assets)
    settings = settings_for(server, model_dir, assets, ("/moved/assets.tar.gz", "/assets.tar.gz"))
    install_model(settings, progress="off")
    assert_installed(model_dir, assets)
    assert server.paths_requested()[1:] == ["/moved/assets.tar.gz", "/assets.tar.gz"]
    assert "HTTP 404" in caplog.text


def test_wrong_checksum_is_rejected_and_the_old_model_untouched(
    server: AssetServer, assets: Assets, model_dir: Path
) -> None:
    before = install_old_model(server, model_dir, assets)
    tampered = make_assets(seed=7)
    serve(server, assets, Route(tampered.tarball))
    with pytest.raises(ChecksumMismatchError) as caught:
        install_model(settings_for(server, model_dir, assets), force=True, progress="off")
    error = caught.value
    assert error.name in assets.members
    assert error.algorithm == "sha512"
    message = str(error)
    assert error.name in message
    assert assets.sha512[error.name] in message
    assert tampered.sha512[error.name] in message
    assert snapshot(model_dir) == before
    assert_no_work_left(model_dir)
    # The wrong bytes are not kept for a later resume.
    left = [p.read_bytes() for p in (model_dir.parent / ".im2txt.download").glob("*.part")]
    assert tampered.tarball not in left


def test_source_with_wrong_checksum_is_skipped_for_the_next(
    server: AssetServer, assets: Assets, model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    serve(server, assets)
    server.routes["/bad.tar.gz"] = Route(make_assets(seed=7).tarball)
    settings = settings_for(server, model_dir, assets, ("/bad.tar.gz", "/assets.tar.gz"))
    install_model(settings, progress="off")
    assert_installed(model_dir, assets)
    assert "sha512 mismatch" in caplog.text
    assert "/bad.tar.gz" in caplog.text


def test_every_source_failing_is_reported_together(
    server: AssetServer, assets: Assets, model_dir: Path
) -> None:
    serve(server, assets)
    server.routes["/bad.tar.gz"] = Route(make_assets(seed=7).tarball)
    settings = settings_for(server, model_dir, assets, ("/gone.tar.gz", "/bad.tar.gz"))
    with pytest.raises(AssetError) as caught:
        install_model(settings, progress="off")
    message = str(caught.value)
    assert "/gone.tar.gz: HTTP 404" in message
    assert "/bad.tar.gz: checkpoint/" in message and "sha512 mismatch" in message
    assert snapshot(model_dir) == {}


def test_wrong_vocabulary_checksum_installs_nothing(
    server: AssetServer, assets: Assets, model_dir: Path
) -> None:
    serve(server, assets)
    server.routes["/word_counts.txt"] = Route(b"a 1\nb 2\n")
    with pytest.raises(ChecksumMismatchError) as caught:
        install_model(settings_for(server, model_dir, assets), progress="off")
    assert caught.value.name == "word_counts.txt"
    assert caught.value.algorithm == "sha256"
    assert assets.vocab_sha256 in str(caught.value)
    assert snapshot(model_dir) == {}
    # The tarball was still fetched: its bytes wait beside the model for the next run.
    assert "/assets.tar.gz" in server.paths_requested()
    kept = list((model_dir.parent / ".im2txt.download").iterdir())
    assert [part.read_bytes() for part in kept] == [assets.tarball]


def _entry(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


@pytest.mark.parametrize(
    ("extra_members", "extra_infos", "reason"),
    [
        ({"../evil": b"pwned"}, [], "'..' would escape"),
        ({"checkpoint/../../evil": b"pwned"}, [], "'..' would escape"),
        ({"/tmp/evil": b"pwned"}, [], "absolute paths"),
        ({}, [_entry("checkpoint/link", tarfile.SYMTYPE, "/etc/passwd")], "links"),
        ({}, [_entry("checkpoint/hard", tarfile.LNKTYPE, "checkpoint/checkpoint")], "links"),
        ({}, [_entry("checkpoint/tty", tarfile.CHRTYPE)], "only regular files"),
        ({}, [_entry("checkpoint/pipe", tarfile.FIFOTYPE)], "only regular files"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink", "hardlink", "device", "fifo"],
)
def test_unsafe_tarball_is_rejected(
    server: AssetServer,
    assets: Assets,
    model_dir: Path,
    extra_members: dict[str, bytes],
    extra_infos: list[tarfile.TarInfo],
    reason: str,
) -> None:
    # The unsafe entry comes after the real files, so extraction had already begun.
    evil = tar_gz({**assets.members, **extra_members}, extra_infos=extra_infos)
    serve(server, assets, Route(evil))
    with pytest.raises(UnsafeArchiveError, match=reason):
        install_model(settings_for(server, model_dir, assets), progress="off")
    assert snapshot(model_dir) == {}
    assert not (model_dir.parent / "evil").exists()
    assert not (model_dir.parent.parent / "evil").exists()
    assert_no_work_left(model_dir)


def test_offline_fails_fast_naming_the_commands(
    server: AssetServer, assets: Assets, model_dir: Path
) -> None:
    serve(server, assets)
    started = time.monotonic()
    with pytest.raises(OfflineError) as caught:
        ensure_model(settings_for(server, model_dir, assets, offline=True))
    assert time.monotonic() - started < 1
    message = str(caught.value)
    assert f"`captioner download --dest {model_dir.absolute()}`" in message
    assert "--from-file assets.tar.gz --vocab-file word_counts.txt" in message
    assert "word_counts.txt" in message and "checkpoint/checkpoint" in message
    assert server.requests == []
    assert not model_dir.parent.exists()


def test_offline_installs_from_files(
    server: AssetServer, assets: Assets, model_dir: Path, tmp_path: Path
) -> None:
    tarball, vocab = tmp_path / "assets.tar.gz", tmp_path / "word_counts.txt"
    tarball.write_bytes(assets.tarball)
    vocab.write_bytes(assets.vocab)
    settings = settings_for(server, model_dir, assets, offline=True)
    install_model(settings, from_file=tarball, vocab_file=vocab, progress="off")
    assert_installed(model_dir, assets)
    assert server.requests == []
    with pytest.raises(OfflineError, match="--vocab-file"):
        install_model(settings, force=True, from_file=tarball, progress="off")


def test_ensure_model_uses_a_complete_directory_without_network(
    server: AssetServer, assets: Assets, model_dir: Path
) -> None:
    serve(server, assets)
    files = ensure_model(settings_for(server, model_dir, assets), progress="off")
    assert files == model_files_in(model_dir)
    assert_installed(model_dir, assets)
    server.requests.clear()
    offline = settings_for(server, model_dir, assets, offline=True)
    assert ensure_model(offline) == files
    assert install_model(offline, progress="off") == model_files_in(model_dir.absolute())
    assert server.requests == []


def test_ensure_model_checks_explicit_files_and_never_downloads(
    server: AssetServer, assets: Assets, tmp_path: Path
) -> None:
    settings = settings_for(server, tmp_path / "unused", assets, checkpoint=tmp_path / "nope")
    with pytest.raises(AssetError, match=r"checkpoint .*nope.*vocabulary"):
        ensure_model(settings)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "model.ckpt-5.index").write_bytes(b"x")
    (tmp_path / "mine" / "model.ckpt-5.data-00000-of-00001").write_bytes(b"x")
    (tmp_path / "mine" / "word_counts.txt").write_bytes(assets.vocab)
    prefix = tmp_path / "mine" / "model.ckpt-5"
    files = ensure_model(settings_for(server, tmp_path / "unused", assets, checkpoint=prefix))
    assert (files.checkpoint, files.vocab) == (prefix, tmp_path / "mine" / "word_counts.txt")
    demo = ensure_model(settings_for(server, tmp_path / "unused", assets, model="demo"))
    assert demo == model_files_in(DEMO_MODEL_DIR)
    assert server.requests == []
    assert not (tmp_path / "unused").exists()


def test_a_second_installer_waits_for_the_lock(
    server: AssetServer, assets: Assets, model_dir: Path
) -> None:
    serve(server, assets)
    model_dir.parent.mkdir(parents=True)
    other_process = FileLock(str(model_dir.parent / ".im2txt.lock"))
    other_process.acquire()
    errors: list[BaseException] = []

    def install() -> None:
        try:
            install_model(settings_for(server, model_dir, assets), progress="off")
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=install)
    worker.start()
    time.sleep(0.3)
    assert worker.is_alive()
    assert server.requests == []
    other_process.release()
    worker.join(timeout=10)
    assert not worker.is_alive() and errors == []
    assert_installed(model_dir, assets)


def test_two_concurrent_installs_download_once(
    server: AssetServer, assets: Assets, model_dir: Path
) -> None:
    serve(server, assets)
    results: list[object] = []

    def install() -> None:
        try:
            results.append(install_model(settings_for(server, model_dir, assets), progress="off"))
        except BaseException as exc:
            results.append(exc)

    workers = [threading.Thread(target=install) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=10)
    assert results == [model_files_in(model_dir.absolute())] * 2
    assert server.paths_requested().count("/assets.tar.gz") == 1
    assert_installed(model_dir, assets)


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file-size limits")
def test_full_disk_leaves_nothing_behind(
    server: AssetServer, assets: Assets, model_dir: Path
) -> None:
    resource = pytest.importorskip("resource")
    before = install_old_model(server, model_dir, assets)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    # Writes past 32 KiB now fail with EFBIG, as they would on a full disk.
    resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, hard))
    try:
        with pytest.raises(AssetError, match=r"cannot install the model in .*File too large"):
            install_model(settings_for(server, model_dir, assets), force=True, progress="off")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous_handler)
    assert snapshot(model_dir) == before
    assert_no_work_left(model_dir)
    # The half-written tarball is deleted to give the space back; the small, whole
    # vocabulary download may stay for the next run.
    left = [p.read_bytes() for p in (model_dir.parent / ".im2txt.download").glob("*.part")]
    assert left in ([], [assets.vocab])


def test_refuses_to_replace_a_directory_that_is_not_a_model(
    server: AssetServer, assets: Assets, model_dir: Path
) -> None:
    serve(server, assets)
    model_dir.mkdir(parents=True)
    (model_dir / "thesis.tex").write_text("years of work")
    with pytest.raises(AssetError, match=r"refusing to replace .*thesis\.tex"):
        install_model(settings_for(server, model_dir, assets), progress="off")
    assert snapshot(model_dir) == {"thesis.tex": b"years of work"}


def test_leftovers_of_a_crashed_installer_are_removed(
    server: AssetServer, assets: Assets, model_dir: Path
) -> None:
    serve(server, assets)
    for leftover in (".im2txt.new-abc123", ".im2txt.old-deadbeef"):
        (model_dir.parent / leftover / "checkpoint").mkdir(parents=True)
    install_model(settings_for(server, model_dir, assets), progress="off")
    assert_installed(model_dir, assets)


def _cli_env(server: AssetServer, assets: Assets) -> dict[str, str]:
    """The environment a private-mirror user would set: the same settings, as variables."""
    return {
        "CAPTIONER_ASSET_SHA512": json.dumps(assets.sha512),
        "CAPTIONER_VOCAB_SHA256": assets.vocab_sha256,
        "CAPTIONER_VOCAB_URL": server.url("/word_counts.txt"),
        "CAPTIONER_DOWNLOAD_TIMEOUT_S": "2",
        "CAPTIONER_DOWNLOAD_BACKOFF_S": "0",
    }


def test_cli_download_installs_and_prints_the_directory(
    server: AssetServer, assets: Assets, model_dir: Path
) -> None:
    serve(server, assets)
    args = ["download", "--dest", str(model_dir), "--quiet"]
    args += ["--url", server.url("/gone.tar.gz"), "--url", server.url("/assets.tar.gz")]
    result = CliRunner().invoke(cli, args, env=_cli_env(server, assets))
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == str(model_dir.absolute())
    assert_installed(model_dir, assets)
    again = CliRunner().invoke(cli, args, env=_cli_env(server, assets))
    assert again.exit_code == 0
    assert server.paths_requested().count("/assets.tar.gz") == 1  # already installed


def test_cli_download_failure_is_one_error_line(
    server: AssetServer, assets: Assets, model_dir: Path
) -> None:
    serve(server, assets)
    args = ["download", "--dest", str(model_dir), "-q", "--url", server.url("/gone.tar.gz")]
    result = CliRunner().invoke(cli, args, env=_cli_env(server, assets))
    assert result.exit_code == 1
    assert "Error: " in result.output and "/gone.tar.gz: HTTP 404 Not Found" in result.output
    assert "Traceback" not in result.output
    assert snapshot(model_dir) == {}


def test_script_installs_from_files(
    monkeypatch: pytest.MonkeyPatch,
    server: AssetServer,
    assets: Assets,
    model_dir: Path,
    tmp_path: Path,
) -> None:
    tarball, vocab = tmp_path / "assets.tar.gz", tmp_path / "word_counts.txt"
    tarball.write_bytes(assets.tarball)
    vocab.write_bytes(assets.vocab)
    for key, value in _cli_env(server, assets).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CAPTIONER_OFFLINE", "1")
    argv = [str(SCRIPT), "--dest", str(model_dir), "--from-file", str(tarball)]
    monkeypatch.setattr(sys, "argv", [*argv, "--vocab-file", str(vocab), "-q"])
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    assert exited.value.code == 0
    assert_installed(model_dir, assets)
    assert server.requests == []


def test_every_failed_source_is_told_once_in_the_error_not_also_in_the_log(
    server: AssetServer, assets: Assets, model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    serve(server, assets)
    settings = settings_for(server, model_dir, assets, ("/gone.tar.gz", "/moved.tar.gz"))
    caplog.set_level(logging.INFO, logger="captioner")
    with pytest.raises(AssetError) as caught:
        install_model(settings, progress="off")
    message = str(caught.value)
    assert message.count("/gone.tar.gz") == 1 and message.count("/moved.tar.gz") == 1
    told = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert not [line for line in told if "/gone.tar.gz" in line or "/moved.tar.gz" in line]


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (
            ["/venv/bin/captioner", "caption", "--model", "im2txt", "photo.jpg"],
            "`captioner caption --model demo photo.jpg`",
        ),
        (
            ["/venv/bin/captioner", "serve", "--port", "80"],
            "`captioner serve --model demo --port 80`",
        ),
        (
            ["/venv/bin/captioner", "download"],
            "`--model demo` on `captioner caption`, `serve` or `evaluate`",
        ),
        (["my_script.py"], 'CAPTIONER_MODEL=demo, or `Settings(model="demo")` from Python'),
    ],
)
def test_the_demo_hint_names_the_command_that_failed(
    server: AssetServer,
    assets: Assets,
    model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    hint: str,
) -> None:
    serve(server, assets)
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(OfflineError) as caught:
        ensure_model(settings_for(server, model_dir, assets, offline=True))
    (line,) = [line for line in str(caught.value).splitlines() if "demo model" in line]
    assert hint in line
