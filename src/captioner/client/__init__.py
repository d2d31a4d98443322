"""A Python client for running captioner servers: ``Client`` and ``AsyncClient``.

::

    from captioner.client import Client

    with Client("http://localhost:5000") as client:
        result = client.caption("photo.jpg")
        print(result.best.text, result.best.probability, result.request_id)
        for image in client.caption_many(["a.jpg", "b.png"], concurrency=8):
            print(image.source, image.best.text if image.ok else image.error)

Both clients have the same methods (the async ones are coroutines, ``caption_many`` an async
iterator): ``caption``, ``caption_many``, ``metadata``, ``ready``, ``wait_ready``. They speak
MAX's API (``POST /model/predict``), so they also work against IBM's original MAX server,
less the readiness probe and the request ids. Per-image results are
:class:`captioner.results.ImageResult`, the record every way of captioning a collection
gives. Importing this package loads neither TensorFlow nor NumPy.
"""

from __future__ import annotations

from captioner.client.answers import CaptionResult, ModelMetadata
from captioner.client.async_client import AsyncClient
from captioner.client.errors import (
    AuthenticationError,
    BadImageError,
    BadRequestError,
    ClientError,
    ImageTooLargeError,
    InvalidParameterError,
    NotReadyError,
    RequestRejectedError,
    ServerConnectionError,
    ServerError,
    ServerOverloadedError,
    ServerTimeoutError,
    ServerUnavailableError,
)
from captioner.client.sync_client import Client
from captioner.results import Caption, ImageResult

__all__ = [
    "AsyncClient",
    "AuthenticationError",
    "BadImageError",
    "BadRequestError",
    "Caption",
    "CaptionResult",
    "Client",
    "ClientError",
    "ImageResult",
    "ImageTooLargeError",
    "InvalidParameterError",
    "ModelMetadata",
    "NotReadyError",
    "RequestRejectedError",
    "ServerConnectionError",
    "ServerError",
    "ServerOverloadedError",
    "ServerTimeoutError",
    "ServerUnavailableError",
]
