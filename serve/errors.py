"""Errors a client can act on, each with its HTTP status. They derive from ValueError, so code
outside the server (predict, the CLI) treats them as the user's input errors too."""

from __future__ import annotations


class ServeError(ValueError):
    status = 400

    def __init__(self, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message, self.headers = message, headers or {}


class BadRequest(ServeError):
    status = 400


class Unauthorized(ServeError):
    status = 401


class NotFound(ServeError):
    status = 404


class BodyTimeout(ServeError):
    """The request body did not arrive in time (a slow or stalled client)."""

    status = 408


class PayloadTooLarge(ServeError):
    status = 413


class UnsupportedMediaType(ServeError):
    status = 415


class Overloaded(ServeError):
    """The model's queue is full or the server is shutting down: try again shortly."""

    status = 503


class RequestTimeout(ServeError):
    status = 504
