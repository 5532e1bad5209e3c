"""Dagster pools: which steps may run at the same time (issue 11).

* ``face_ingest`` — detection of a batch: runs of different batches in parallel, as many as the instance allows
  (``dagster instance concurrency set face_ingest N``: N = GPUs, or cores / 2 on CPU; unsized it holds 1).
* ``face_library`` — every step that reads or rewrites library-wide state: organise (supervised assignment,
  unknown clusters, the follow-up organise of a batch's new faces), training, re-embedding; and, in Qdrant local
  mode, embedding a batch (it writes the Qdrant folder, which one process may open at a time). Limit 1 (``dagster instance concurrency set face_library 1``; the instance
  default of 1 covers it too), so these run one at a time whatever starts them — which also keeps Qdrant local
  mode (one process at a time) safe.

Set both limits explicitly on a PostgreSQL instance: relying on the default limit hits dagster-io/dagster#33552
(two runs lazily creating the same pool row; one crashes with InFailedSqlTransaction), seen here with 4 runs.
"""

INGEST_POOL = "face_ingest"
LIBRARY_POOL = "face_library"


def vector_write_pool(settings) -> str:
    """The pool of a step that writes the vector store: a Qdrant server takes concurrent writers (ingest pool);
    the local-mode folder admits one process (library pool of 1)."""
    return INGEST_POOL if settings.qdrant_url else LIBRARY_POOL
