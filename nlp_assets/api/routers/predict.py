"""Synchronous predictions for applications: texts in, the pipeline's predictions out, now.

Nothing is written: an application that wants the document kept submits it to
`POST /v1/documents`. The least role is `submitter` (the request spends model time as a
submission does); the rate limit, the body cap and the per-text cap are the API's own."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from nlp_assets.api.auth import Principal
from nlp_assets.api.deps import submitter
from nlp_assets.api.predict import NotReady, response
from nlp_assets.api.services import Services, services
from nlp_assets.resources.models.specs import ModelLoadError

router = APIRouter(tags=["predict"])


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(
        min_length=1, description="The texts, at most NLP_API_PREDICT_MAX_TEXTS (64)."
    )
    embedding: bool = Field(default=False, description="Also return each text's embedding.")


@router.post(
    "/v1/predict",
    summary="Sentiment, entities and (on request) the embedding of up to 64 texts, now.",
    description="The pipeline's cleaning, language id, tokens, embeddings, sentiment head (or "
    "text model, with the A/B split by document id: the first 16 hex digits of the text's "
    "sha256) and entity model, labelled with the model versions the pipeline uses. Nothing is "
    "written. 413 past the text count or a text past the per-record cap; 503 when no "
    "sentiment model is trained yet.",
)
async def post_predict(
    body: PredictRequest,
    _: Principal = submitter,
    found: Services = Depends(services),  # noqa: B008
) -> dict[str, Any]:
    config = found.config
    if len(body.texts) > config.predict_max_texts:
        found.metrics.rejections.labels("batch too large").inc()
        raise HTTPException(
            413,
            f"{len(body.texts)} texts: send at most {config.predict_max_texts} per request",
        )
    for index, text in enumerate(body.texts):
        if len(text.encode("utf-8")) > config.max_record_bytes:
            found.metrics.rejections.labels("record too large").inc()
            raise HTTPException(
                413, f"text {index} is over the {config.max_record_bytes}-byte cap of a record"
            )
    try:  # waits on the batcher's call without holding a worker thread
        part = await asyncio.wrap_future(
            found.predictor.submit(body.texts, embedding=body.embedding)
        )
    except NotReady as error:
        raise HTTPException(503, str(error), {"Retry-After": "60"}) from None
    except (ModelLoadError, ImportError) as error:  # no server, and no models in this image
        raise HTTPException(
            503, f"models unavailable: {type(error).__name__}: {error}"[:300], {"Retry-After": "5"}
        ) from None
    return response(part)
