"""Typed errors every front end maps the same way, without matching message text.

The message of each error is written for the user and printed as is (one line). The class says what kind of
problem it is, which is what a front end needs: the CLI exits non-zero with the message, the HTTP API answers
400 / 404 / 409 / 503.
"""

from __future__ import annotations


class FacePipelineError(Exception):
    """An expected condition the user can act on (never a bug): the message says what and how."""

    http_status = 400


class InvalidInput(FacePipelineError, ValueError):
    """The request itself is wrong: an empty or malformed name, an id of the wrong shape, an impossible split."""

    http_status = 400


class NotFound(FacePipelineError, LookupError):
    """An id or name that does not exist in this library."""

    http_status = 404


class Conflict(FacePipelineError):
    """The request is valid but clashes with the library's state: a name already taken, a merged or hidden person,
    a face whose photo already holds that person."""

    http_status = 409


class LibraryNotReady(FacePipelineError):
    """The library cannot answer correctly right now (embeddings missing, the vector store broken): the message
    names the problem and the command that fixes it."""

    http_status = 503


# The name the label operations have always raised; every typed error above is one.
LabelError = FacePipelineError
