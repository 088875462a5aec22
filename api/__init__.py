"""memplan's HTTP service (FastAPI): `create_app()` builds it; `memplan serve` runs it under uvicorn."""

from api.app import create_app

__all__ = ["create_app"]
