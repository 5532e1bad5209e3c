"""Clustering of faces, one concept per module: the neighbour graph (:mod:`.neighbours`), the methods and their
registry (:mod:`.methods`), incremental joins and stable ids (:mod:`.incremental`). The entry point is
:func:`face_pipeline.core.cluster.cluster_faces`."""
