"""Installing the pretrained model from a local mirror: the settings a user with a private
mirror would write, and what an installed model directory must hold."""

from __future__ import annotations

from pathlib import Path

from captioner.config import Settings
from captioner.download import install_model
from support.http_fixtures import Assets, AssetServer, Route, snapshot

__all__ = ["assert_installed", "assert_no_work_left", "install_old_model", "serve", "settings_for"]


def serve(server: AssetServer, assets: Assets, tarball: Route | None = None) -> None:
    server.routes["/assets.tar.gz"] = tarball or Route(assets.tarball)
    server.routes["/word_counts.txt"] = Route(assets.vocab)


def settings_for(
    server: AssetServer, model_dir: Path, assets: Assets, paths: tuple[str, ...] = (), **kw
) -> Settings:
    """Settings a user with a private mirror would write: sources, pins, short timeouts."""
    values = {
        "model_dir": model_dir,
        "download_urls": [server.url(p) for p in paths or ("/assets.tar.gz",)],
        "vocab_url": server.url("/word_counts.txt"),
        "asset_sha512": assets.sha512,
        "vocab_sha256": assets.vocab_sha256,
        "download_timeout_s": 2.0,
        "download_retries": 1,
        "download_backoff_s": 0.0,
        **kw,
    }
    return Settings(**values)


def assert_installed(model_dir: Path, assets: Assets) -> None:
    """Exactly the pinned members and the vocabulary, byte for byte, and no leftovers beside."""
    expected = dict(assets.members)
    expected["word_counts.txt"] = assets.vocab
    files = {k: v for k, v in snapshot(model_dir).items() if v is not None}
    assert files == expected
    siblings = {p.name for p in model_dir.parent.iterdir()} - {model_dir.name}
    assert siblings == set()  # no lock file, no download folder, no staging left


def assert_no_work_left(model_dir: Path) -> None:
    """No staging or replaced directory beside the model (partial downloads may stay)."""
    names = [p.name for p in model_dir.parent.iterdir()] if model_dir.parent.exists() else []
    assert not [n for n in names if ".new-" in n or ".old-" in n]


def install_old_model(
    server: AssetServer, model_dir: Path, assets: Assets
) -> dict[str, bytes | None]:
    serve(server, assets)
    install_model(settings_for(server, model_dir, assets), progress="off")
    server.requests.clear()
    return snapshot(model_dir)
