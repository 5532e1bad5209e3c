"""Moved to :mod:`face_pipeline.evaluation.metrics` (metrics are evaluation, not product logic).

Kept only so modules owned by other work (training) keep importing while branches merge; new code imports
``face_pipeline.evaluation.metrics``. Delete once nothing imports this path.
"""

from face_pipeline.evaluation.metrics import (  # noqa: F401
    PRF,
    AssignmentScore,
    assignment_score,
    bcubed_prf,
    noise_as_singletons,
    pairwise_prf,
    purity,
)
