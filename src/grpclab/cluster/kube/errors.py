"""What the kube backend raises, and how it reads the kubernetes client's ApiException."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager


class KubeError(RuntimeError):
    """The cluster refused or could not do what was asked; the message says what and where."""


def api_exception() -> type[Exception]:
    """The kubernetes client's ApiException (imported late: the client takes seconds to load).

    The dynamic client's errors (NotFoundError, ForbiddenError, ...) are subclasses of it.
    """
    from kubernetes.client.exceptions import ApiException

    return ApiException


def api_error_message(error: Exception) -> str:
    """The API server's own message from an ApiException body, else the exception text."""
    body = getattr(error, "body", None)
    if body:
        try:
            data = json.loads(body)
            return str(data.get("message") or body)
        except (ValueError, AttributeError):
            return str(body)
    return str(getattr(error, "reason", None) or error)


def status_code(error: Exception) -> int | None:
    return getattr(error, "status", None)


@contextmanager
def missing_as_key_error(kind: str, name: str, namespace: str) -> Iterator[None]:
    """Turn the API server's 404 for one object into the KeyError the Cluster interface raises."""
    try:
        yield
    except api_exception() as error:
        if status_code(error) == 404:
            raise KeyError(f'{kind} "{name}" not found in namespace {namespace}') from None
        raise
