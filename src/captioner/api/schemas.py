"""The JSON bodies of the HTTP API: MAX's contract (string ``index``, ``status``) plus extras."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = [
    "BatchItem",
    "BatchResponse",
    "ErrorResponse",
    "Liveness",
    "ModelMetadata",
    "NotReady",
    "PredictResponse",
    "Prediction",
    "Readiness",
    "ServerLimits",
]


class Prediction(BaseModel):
    """One caption of one image; a response lists them best first."""

    index: str = Field(
        description="Rank as a string, '0' the best: MAX's web app compares index == '0'.",
        examples=["0"],
    )
    caption: str = Field(examples=["a man riding a wave on top of a surfboard ."])
    probability: float = Field(
        description="Joint probability of the caption's words (exp of logprob).",
        examples=[0.038827644239537],
    )
    logprob: float = Field(
        description="Natural-log joint probability; unlike probability it never underflows.",
        examples=[-3.2487],
    )


class PredictResponse(BaseModel):
    """Body of a successful ``POST /model/predict`` (MAX's shape)."""

    status: Literal["ok"] = "ok"
    predictions: list[Prediction]


class BatchItem(BaseModel):
    """The outcome for one file of a batch request: its predictions, or its own error."""

    index: str = Field(description="Position of the file in the request, as a string.")
    filename: str | None = Field(None, description="The file name the client sent, if any.")
    status: Literal["ok", "error"]
    predictions: list[Prediction] | None = Field(None, description="Present when status is ok.")
    code: int | None = Field(
        None, description="When status is error: the HTTP status this file alone would get."
    )
    message: str | None = Field(None, description="When status is error: what went wrong.")


class BatchResponse(BaseModel):
    """Body of ``POST /model/predict/batch``: one item per uploaded file, in upload order."""

    status: Literal["ok"] = "ok"
    results: list[BatchItem]


class ModelMetadata(BaseModel):
    """MAX's six metadata fields."""

    id: str
    name: str
    description: str
    type: str
    source: str
    license: str


class ServerLimits(BaseModel):
    """What a client may send, so it can check before uploading (``GET /limits``).

    Each field is the server setting of the same name, except ``min_max_length``, which is
    fixed (the shortest caption with a word).
    """

    max_upload_bytes: int = Field(
        description="Largest image in bytes: the whole body of POST /model/predict (multipart "
        "framing included), and each image of a batch request; larger: 413."
    )
    max_batch_upload_bytes: int = Field(
        description="Largest body of POST /model/predict/batch in bytes, all its images and "
        "their framing together; larger: 413."
    )
    max_image_pixels: int = Field(description="Largest decoded image, width x height; larger: 413.")
    max_files_per_batch_request: int = Field(
        description="Most images in one POST /model/predict/batch."
    )
    default_beam_size: int = Field(description="beam_size when a request gives none.")
    max_beam_size: int = Field(description="Largest beam_size accepted.")
    min_max_length: int = Field(
        description="Smallest max_length accepted: `<S>`, one word, `</S>` (below it every "
        "caption would be empty)."
    )
    default_max_length: int = Field(description="max_length when a request gives none.")
    max_max_length: int = Field(description="Largest max_length accepted.")
    max_batch_size: int = Field(
        description=(
            "Most images in one engine call: this many requests in flight at once keep "
            "the server's batches full without queueing more."
        )
    )


class ErrorResponse(BaseModel):
    """Body of every 4xx/5xx answer."""

    status: Literal["error"] = "error"
    message: str = Field(description="What went wrong, for a person to read.")
    errors: dict[str, str] | None = Field(
        None, description="For validation failures: parameter name -> what is wrong with it."
    )


class Liveness(BaseModel):
    """Body of ``GET /v2/health/live``."""

    live: Literal[True] = True


class Readiness(BaseModel):
    """Body of a ready ``GET /v2/health/ready``."""

    ready: Literal[True] = True


class NotReady(BaseModel):
    """Body of ``GET /v2/health/ready`` while loading, draining or failed."""

    ready: Literal[False] = False
    status: Literal["error"] = "error"
    message: str = Field(description="Why: loading, draining, or the load error.")
