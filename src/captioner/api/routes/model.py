"""The MAX-compatible ``/model/*`` routes: predict, batch predict, metadata."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request

from captioner.api.deps import SearchParamsDep, ServiceDep, SettingsDep
from captioner.api.errors import RETRY_AFTER_HEADER, rule_for
from captioner.api.schemas import (
    BatchItem,
    BatchResponse,
    ErrorResponse,
    ModelMetadata,
    Prediction,
    PredictResponse,
)
from captioner.api.uploads import image_limit, read_images

if TYPE_CHECKING:
    from captioner.engine import ModelInfo
    from captioner.results import Caption

__all__ = ["router"]

router = APIRouter(prefix="/model", tags=["model"])

_NOT_READY = {
    "model": ErrorResponse,
    "description": "Loading, draining, or the queue or the upload memory budget is full.",
    "headers": RETRY_AFTER_HEADER,
}
_ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorResponse, "description": "Missing or unreadable image, bad parameter."},
    408: {"model": ErrorResponse, "description": "The body did not arrive within the deadline."},
    413: {"model": ErrorResponse, "description": "Upload or image too large."},
    503: _NOT_READY,
    504: {"model": ErrorResponse, "description": "Waited in the queue past the deadline."},
}

# MAX's metadata for the original checkpoint, word for word (its test suite checks it).
_MAX_METADATA = ModelMetadata(
    id="max-image-caption-generator",
    name="MAX Image Caption Generator",
    description="im2txt TensorFlow model trained on MSCOCO",
    type="Image-to-Text Translation",
    source="https://developer.ibm.com/exchanges/models/all/max-image-caption-generator/",
    license="Apache 2.0",
)


def _metadata_for(info: ModelInfo) -> ModelMetadata:
    """MAX's metadata for the original checkpoint; an honest description for any other."""
    if info.is_pretrained_im2txt:
        return _MAX_METADATA
    if info.is_bundled_demo:
        return ModelMetadata(
            id="captioner-demo",
            name="captioner: demo model",
            description=(
                "The demo model bundled with captioner: Show and Tell trained by the captioner "
                "project on generated scenes of one coloured shape, or a small one beside a "
                f"large one ({info.vocab_size}-word vocabulary with <UNK>, step "
                f"{info.global_step}). It knows only such scenes: on a photo, or on two shapes "
                "of about the same size, it answers confidently and wrongly. "
                "Not the pretrained MAX model: start the server without --model demo "
                "(or CAPTIONER_MODEL=demo) to caption photos with it."
            ),
            type="Image-to-Text Translation",
            source="bundled with captioner",
            license="Apache-2.0",
        )
    return ModelMetadata(
        id=f"captioner-{info.name}",
        name=f"captioner: {info.name}",
        description=(
            f"Show and Tell (im2txt) architecture, checkpoint '{info.name}' at step "
            f"{info.global_step}: {info.image_feature_size}-d image features, "
            f"{info.embedding_size}-d embeddings, {info.lstm_units}-unit LSTM, "
            f"{info.vocab_size}-word vocabulary. Not the pretrained MAX model."
        ),
        type="Image-to-Text Translation",
        source="local checkpoint",
        license="unspecified (see the checkpoint's provider)",
    )


def _predictions(captions: Sequence[Caption]) -> list[Prediction]:
    return [
        Prediction(
            index=str(rank),
            caption=caption.text,
            probability=caption.probability,
            logprob=caption.logprob,
        )
        for rank, caption in enumerate(captions)
    ]


@router.get(
    "/metadata",
    response_model=ModelMetadata,
    responses={503: {**_NOT_READY, "description": "Loading or draining."}},
)
async def metadata(service: ServiceDep) -> ModelMetadata:
    """Describe the loaded model (MAX's six fields)."""
    return _metadata_for(service.info)


def _multipart_body(image: Mapping[str, object]) -> dict[str, object]:
    """The route's ``requestBody`` (the routes read it themselves, see ``uploads``)."""
    schema = {"type": "object", "properties": {"image": image}, "required": ["image"]}
    return {
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": schema}},
        }
    }


# A file of at least one byte: an empty part is never an image (uploads.py refuses a part
# that is a plain form field, which is not a binary string either).
_FILE = {"type": "string", "contentMediaType": "application/octet-stream", "minLength": 1}


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=_ERRORS,
    openapi_extra=_multipart_body(_FILE),
)
async def predict(
    request: Request, service: ServiceDep, params: SearchParamsDep
) -> PredictResponse:
    """Caption one image (a part named `image`): up to `beam_size` captions, best first.

    The declared content type of the part is ignored: the bytes decide.
    """
    (image,) = await read_images(request, max_images=1)
    captioned = await service.caption(
        image.data, beam_size=params.beam_size, max_length=params.max_length
    )
    request.state.batch_size = captioned.batch_size
    return PredictResponse(predictions=_predictions(captioned.captions))


@router.post(
    "/predict/batch",
    response_model=BatchResponse,
    response_model_exclude_none=True,
    responses=_ERRORS,
    openapi_extra=_multipart_body({"type": "array", "items": _FILE}),
)
async def predict_batch(
    request: Request, service: ServiceDep, settings: SettingsDep, params: SearchParamsDep
) -> BatchResponse:
    """Caption several images (each a part named `image`); one result per file, in order.

    A file that cannot be captioned gets its own error entry; the others still succeed.
    """
    image = await read_images(
        request, max_images=settings.max_files_per_batch_request, limit=image_limit(settings)
    )
    readable = [upload for upload in image if upload.error is None]
    captioned = iter(
        await service.caption_many(
            [upload.data for upload in readable],
            beam_size=params.beam_size,
            max_length=params.max_length,
        )
    )
    outcomes = [upload.error or next(captioned) for upload in image]
    results: list[BatchItem] = []
    for index, (upload, outcome) in enumerate(zip(image, outcomes, strict=True)):
        if isinstance(outcome, Exception):
            results.append(
                BatchItem(
                    index=str(index),
                    filename=upload.filename,
                    status="error",
                    code=rule_for(outcome).status,
                    message=str(outcome),
                )
            )
        else:
            results.append(
                BatchItem(
                    index=str(index),
                    filename=upload.filename,
                    status="ok",
                    predictions=_predictions(outcome.captions),
                )
            )
    request.state.batch_size = max(
        (o.batch_size for o in outcomes if not isinstance(o, Exception)), default=0
    )
    return BatchResponse(results=results)
