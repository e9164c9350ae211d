"""What the service does when PostgreSQL or Redis cannot be reached for a while (DESIGN §6).

A passing fault (a restarted server, a terminated connection, a network blip) is not a reason to
fail work or to answer 500:

* background work retries the operation that met it (:func:`until_it_works`), so a replay goes
  on after its last recorded turn instead of failing or calling the model again;
* an API call or a page answers 503 with ``Retry-After`` and the one error body
  (:class:`ServiceUnavailableMiddleware` here, the API's exception handler for its views);
* the cache answers as if empty when Redis is down (``DJANGO_REDIS_IGNORE_EXCEPTIONS``), so
  calls that need only PostgreSQL keep working.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import stamina
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import SimpleTemplateResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Django wraps psycopg's errors (a pool that cannot connect included) in these two.
INFRASTRUCTURE_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    RedisConnectionError,
    RedisTimeoutError,
)
RETRY_AFTER_S = 5
UNAVAILABLE = (
    "The service cannot reach its database or Redis at the moment; nothing was lost, try again "
    "in a few seconds."
)


def until_it_works(operation: Callable[[], T], *, what: str) -> T:
    """``operation()``, run again after a database or Redis error until it works, with backoff,
    for at most REPLAY_HEARTBEAT_TIMEOUT; past that the error propagates.

    The thread's database connection is dropped after each error, so that the next attempt
    takes a fresh one (a pool discards the broken one). ``operation`` must be safe to run again:
    a conditional update, or a write whose second attempt finds the first one's row.
    """
    # The first attempt outside stamina: it is nearly always the only one, and a retry
    # context is built for every turn of every replay.
    try:
        return operation()
    except INFRASTRUCTURE_ERRORS as error:
        _dropped(what, error)
    for attempt in stamina.retry_context(
        on=INFRASTRUCTURE_ERRORS,
        attempts=None,
        timeout=float(settings.REPLAY_HEARTBEAT_TIMEOUT),
        wait_initial=0.2,
        wait_max=5.0,
    ):
        with attempt:
            try:
                return operation()
            except INFRASTRUCTURE_ERRORS as error:
                _dropped(what, error)
                raise
    raise AssertionError("unreachable: stamina either returns or raises")


def _dropped(what: str, error: Exception) -> None:
    logger.warning("%s met %r; trying again", what, error)
    if not connection.in_atomic_block:
        connection.close()


def unavailable_response(request: HttpRequest) -> HttpResponse:
    """503 with Retry-After: the one error body for the API, a short page elsewhere."""
    response: HttpResponse
    if request.path.startswith("/api/"):
        response = JsonResponse({"detail": UNAVAILABLE, "code": "service_unavailable"}, status=503)
    else:
        response = SimpleTemplateResponse("503.html", {"message": UNAVAILABLE}, status=503).render()
    response["Retry-After"] = str(RETRY_AFTER_S)
    return response


class ServiceUnavailableMiddleware:
    """An outage met outside the API's views (a page, the admin, a session read) answers 503."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, INFRASTRUCTURE_ERRORS):
            return None
        logger.warning("%s %s met an outage: %r", request.method, request.path, exception)
        return unavailable_response(request)
