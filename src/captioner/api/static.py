"""Files shipped inside Python packages, served with long caching and strict security headers.

Two bundles use this: the web page's own files (``captioner/api/static``) and Swagger UI's
(from the ``fastapi-offline`` package, so nothing third-party lives in this repository).
A bundle's URL holds a digest of its contents (``/static/<digest>/app.js``): a file can
then be cached for a year and marked immutable, and an upgrade changes every URL at once.
Relative imports between the page's modules stay inside the same digest, so they are
versioned together without a build step.

HTML documents (the page, the API docs) are never cached without a check, and carry a
Content-Security-Policy that lets them load nothing from anywhere but this server.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

__all__ = [
    "CSP",
    "AssetBundle",
    "html_response",
    "page_bundle",
    "page_template",
    "swagger_bundle",
]

# The page's files, beside this module; its HTML documents are templates, not assets.
_PAGE_PACKAGE, _PAGE_DIRECTORY = "captioner.api", "static"
# Swagger UI 5 (OpenAPI 3.1 needs 5.x), as the fastapi-offline package ships it.
_SWAGGER_PACKAGE, _SWAGGER_DIRECTORY = "fastapi_offline", "static"
_SWAGGER_FILES = ("swagger-ui-bundle.js", "swagger-ui.css")

# Both HTML documents (the page and the API docs): scripts, styles and requests from this
# server only, no inline scripts; images also from blob: (thumbnails of the user's own
# files) and data: (Swagger UI's icons).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)
_IMMUTABLE = "public, max-age=31536000, immutable"
_REVALIDATE = "no-cache"
# What a bundle may hold; HTML documents are served as pages (with the CSP), not as files.
_MEDIA_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
_DIGEST_CHARS = 12


@dataclass(frozen=True)
class _Asset:
    body: bytes
    gzipped: bytes
    media_type: str
    etag: str


class AssetBundle:
    """A fixed set of files held in memory (plain and gzipped), under one digest.

    Built once per process (the functions below are cached) and in a worker thread (the
    routes are plain functions): compressing Swagger UI takes a tenth of a second.

    Args:
        assets: File name -> contents; the suffix picks the media type.
    """

    def __init__(self, assets: dict[str, bytes]) -> None:
        digest = hashlib.sha256()
        self._assets: dict[str, _Asset] = {}
        for name in sorted(assets):
            body = assets[name]
            suffix = _suffix(name)
            file_digest = hashlib.sha256(body).hexdigest()
            digest.update(f"{name}\0{file_digest}\0".encode())
            self._assets[name] = _Asset(
                body=body,
                gzipped=gzip.compress(body, mtime=0),
                media_type=_MEDIA_TYPES[suffix],
                etag=f'"{file_digest[:32]}"',
            )
        self.digest = digest.hexdigest()[:_DIGEST_CHARS]

    def response(self, request: Request, digest: str, name: str) -> Response:
        """Answer ``GET <prefix>/<digest>/<name>``.

        The answer is cacheable forever (the digest changes with any file), revalidates
        with its ETag, and is gzipped for clients that accept it.

        Raises:
            HTTPException: 404, for another digest (another version) or an unknown file.
        """
        asset = self._assets.get(name)
        if asset is None or digest != self.digest:
            raise HTTPException(404)  # the app's usual 404 body
        headers = {
            "Cache-Control": _IMMUTABLE,
            "ETag": asset.etag,
            "Vary": "Accept-Encoding",
            "X-Content-Type-Options": "nosniff",
        }
        if asset.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        body = asset.body
        if "gzip" in request.headers.get("accept-encoding", ""):
            body = asset.gzipped
            headers["Content-Encoding"] = "gzip"
        return Response(body, media_type=asset.media_type, headers=headers)


@cache
def page_bundle() -> AssetBundle:
    """The web page's scripts, styles and icons (``api/static``, less its HTML)."""
    folder = files(_PAGE_PACKAGE).joinpath(_PAGE_DIRECTORY)
    return AssetBundle(
        {
            entry.name: entry.read_bytes()
            for entry in folder.iterdir()
            if entry.is_file() and _suffix(entry.name) in _MEDIA_TYPES
        }
    )


@cache
def swagger_bundle() -> AssetBundle:
    """Swagger UI's script and stylesheet, from the installed ``fastapi-offline`` package.

    Raises:
        FileNotFoundError: The package lacks a file (a broken install).
    """
    folder = files(_SWAGGER_PACKAGE).joinpath(_SWAGGER_DIRECTORY)
    return AssetBundle({name: folder.joinpath(name).read_bytes() for name in _SWAGGER_FILES})


@cache
def page_template(name: str) -> str:
    """An HTML document of ``api/static``, with ``{{ assets }}`` for its bundle's URL."""
    return files(_PAGE_PACKAGE).joinpath(_PAGE_DIRECTORY).joinpath(name).read_text(encoding="utf-8")


def _suffix(name: str) -> str:
    return name[name.rfind(".") :]


def html_response(html: str) -> HTMLResponse:
    """An HTML document: always revalidated, loads nothing from outside this server."""
    return HTMLResponse(
        html,
        headers={
            "Cache-Control": _REVALIDATE,
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )
