"""The one Dagster resource: the library's settings and the expensive things built from them (models, vector
store), plus the code location's executor.

Settings come from the environment (``FACE_*``, ``FACE_PIPELINE_HOME``, ``DATABASE_URL``, ``QDRANT_URL``);
``home`` overrides the home folder (tests use it). The models are the process's shared instance
(:func:`face_pipeline.core.models.shared_models`), so the code server, a run worker and a web app never load two
copies; the vector store is opened per use and closed after it, because Qdrant local mode admits one process and
runs, sensors and the CLI are different processes.

Runs execute in one process (``in_process_executor``): the Qdrant local folder admits one process, and a
multi-process executor would open it from every step.
"""

from contextlib import contextmanager
from typing import Iterator

import dagster as dg

from face_pipeline.core.models import FaceModels, shared_models
from face_pipeline.core.vectors import FaceVectorStore, open_vector_client
from face_pipeline.home import prepare_home
from face_pipeline.settings import Settings


class FacePipelineResource(dg.ConfigurableResource):
    """A library home: its settings, models and vector store."""

    home: str | None = None

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # --- crash recovery (face_pipeline/runs.py): record which process executes this run, so a run whose
        # process was killed can be told apart from a live one and failed, freeing its pool slot.
        run = context.run
        if run is not None and context.instance is not None:
            from face_pipeline.runs import record_run_worker

            record_run_worker(context.instance, run.run_id)

    def settings(self) -> Settings:
        settings = Settings(home=self.home) if self.home else Settings()
        prepare_home(settings, set_dagster_home=False)  # once per process and home (memoised)
        return settings

    def models(self) -> FaceModels:
        return shared_models(self.settings())

    @contextmanager
    def vector_store(self, alias: str | None = None, dim: int = 512) -> Iterator[FaceVectorStore]:
        settings = self.settings()
        with open_vector_client(settings) as client:
            yield FaceVectorStore(client, alias or settings.qdrant_collection, dim, quantization=settings.qdrant_quantization)


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"face_pipeline": FacePipelineResource()}, executor=dg.in_process_executor)
