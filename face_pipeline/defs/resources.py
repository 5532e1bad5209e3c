"""The one Dagster resource: settings plus the expensive things built from them (models, vector client)."""


from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

import dagster as dg

from face_pipeline.core.models import FaceModels
from face_pipeline.core.vectors import FaceVectorStore, open_vector_client
from face_pipeline.settings import Settings


@lru_cache(maxsize=4)
def _models(settings_json: str) -> FaceModels:
    return FaceModels(Settings.model_validate_json(settings_json))


class FacePipelineResource(dg.ConfigurableResource):
    """Settings come from the environment; ``home`` overrides FACE_PIPELINE_HOME (tests use it)."""

    home: str | None = None

    def settings(self) -> Settings:
        return Settings(home=self.home) if self.home else Settings()

    def models(self) -> FaceModels:
        """Loaded once per process (0.2 s each, but sessions hold memory)."""
        return _models(self.settings().model_dump_json())

    @contextmanager
    def vector_store(self, alias: str | None = None, dim: int = 512) -> Iterator[FaceVectorStore]:
        settings = self.settings()
        with open_vector_client(settings) as client:
            yield FaceVectorStore(client, alias or settings.qdrant_collection, dim, quantization=settings.qdrant_quantization)
