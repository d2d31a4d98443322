"""The HTTP server: a FastAPI app over the model service (see :func:`create_app`)."""

from captioner.api.app import create_app

__all__ = ["create_app"]
