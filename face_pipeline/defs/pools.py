"""Dagster pools: which steps may run at the same time (issue 11).

* ``face_ingest`` — detection of a batch: runs of different batches in parallel, as many as the instance allows
  (``dagster instance concurrency set face_ingest N``: N = GPUs, or cores / 2 on CPU; unsized it holds 1).
* ``face_library`` — every step that reads or rewrites library-wide state or writes the vector store: organise
  (supervised assignment, unknown clusters), training, re-embedding, and embedding a batch (it writes Qdrant, and
  organises the batch's new faces). Limit 1 (``dagster instance concurrency set face_library 1``; the instance
  default of 1 covers it too), so these run one at a time whatever starts them — which also keeps Qdrant local
  mode (one process at a time) safe.

Set both limits explicitly on a PostgreSQL instance: relying on the default limit hits dagster-io/dagster#33552
(two runs lazily creating the same pool row; one crashes with InFailedSqlTransaction), seen here with 4 runs.
"""

INGEST_POOL = "face_ingest"
LIBRARY_POOL = "face_library"
