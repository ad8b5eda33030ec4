"""The HTTP API in front of the pipeline: `create_app` builds the FastAPI app (docs/api.md)."""

from nlp_assets.api.app import create_app

__all__ = ["create_app"]
