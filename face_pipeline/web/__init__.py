"""People review over HTTP: the API under ``/api/v1`` and the people page. See :func:`create_app`.

``create_app`` is imported lazily so that light modules of this package (``naming``) can be used by the CLI
without loading FastAPI.
"""


def create_app(*args, **kwargs):
    from face_pipeline.web.app import create_app as _create_app

    return _create_app(*args, **kwargs)


__all__ = ["create_app"]
