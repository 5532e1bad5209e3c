"""SQL storage: schema (``schema``), engines/sessions/migrations (``session``)."""

from face_pipeline.core.db.session import get_engine, normalize_url, session_scope, upgrade

__all__ = ["get_engine", "normalize_url", "session_scope", "upgrade"]
