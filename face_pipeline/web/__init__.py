"""People review over HTTP: the API under ``/api/v1`` and the people page. See :func:`create_app`."""

from face_pipeline.web.app import create_app

__all__ = ["create_app"]
