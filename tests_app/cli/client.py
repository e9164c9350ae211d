"""A small client of the REST API and the progress websocket, for the command line.

It knows nothing of the database or Django: only URLs, the key, and the documented bodies.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection, connect

URL_VARIABLE = "REPLAYBENCH_URL"
KEY_VARIABLE = "REPLAYBENCH_API_KEY"
DEFAULT_URL = "http://127.0.0.1:8000"
API_PREFIX = "/api/v5/artifacts/"
REQUEST_TIMEOUT_S = 60
# get answers at most this many runs and invocations per page.
GET_PAGE_SIZE = 500
FINISHED_TEST_STATUSES = {"completed", "stopped"}
# How long to listen before reading get again: the socket is a hint, get is the truth.
RECHECK_S = 5.0


class CliError(Exception):
    """Something that stops a command: the connection, the configuration or an API error."""


class ApiError(CliError):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.code = str(body.get("code", "error"))
        self.detail = str(body.get("detail", "The server refused the request."))
        self.fields = body.get("fields")
        super().__init__(f"{self.detail} ({self.code}, HTTP {status})")


@dataclass(frozen=True)
class Settings:
    url: str
    key: str

    @classmethod
    def from_environment(cls) -> Settings:
        key = os.environ.get(KEY_VARIABLE, "").strip()
        if not key:
            raise CliError(f"Set {KEY_VARIABLE} to an API key (manage.py create_api_key).")
        url = os.environ.get(URL_VARIABLE, "").strip() or DEFAULT_URL
        return cls(url=url.rstrip("/"), key=key)


@dataclass(frozen=True)
class Progress:
    finished: int
    total: int
    status: str


def progress_of(detail: dict[str, Any]) -> Progress:
    summary = detail.get("status_summary") or {}
    by_status = summary.get("by_status") or {}
    finished = sum(int(by_status.get(name, 0)) for name in ("completed", "failed", "stopped"))
    return Progress(
        finished=finished, total=int(summary.get("total_runs") or 0), status=detail["status"]
    )


def grades_pending(detail: dict[str, Any]) -> bool:
    return any(
        (invocation.get("grade") or {}).get("status") == "pending"
        for invocation in detail.get("invocations") or []
    )


class Client:
    def __init__(self, settings: Settings, *, transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        self.http = httpx.Client(
            base_url=settings.url,
            headers={"X-Api-Key": settings.key, "User-Agent": "replaybench-cli"},
            timeout=REQUEST_TIMEOUT_S,
            transport=transport,
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def post(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``/api/v5/artifacts/<endpoint>``; the answer, or ApiError with the error body."""
        try:
            response = self.http.post(API_PREFIX + endpoint, json=body)
        except httpx.TransportError as error:
            raise CliError(f"Cannot reach {self.settings.url}: {error}") from error
        try:
            answer = response.json()
        except json.JSONDecodeError as error:
            raise CliError(
                f"{self.settings.url} answered HTTP {response.status_code} without JSON: "
                "is REPLAYBENCH_URL the server's address?"
            ) from error
        if response.status_code >= 400:
            raise ApiError(response.status_code, answer if isinstance(answer, dict) else {})
        return dict(answer)

    def get_test(self, test_id: str) -> dict[str, Any]:
        return self.post("test/get", {"test_id": test_id, "runs_page_size": GET_PAGE_SIZE})

    def compare_all(self, test_ids: list[str]) -> dict[str, Any]:
        """compare with every entry (the pages of entries put together)."""
        body: dict[str, Any] = {"test_ids": test_ids, "page_size": GET_PAGE_SIZE, "page_offset": 0}
        comparison = self.post("test/compare", body)
        entries = list(comparison["entries"])
        while len(entries) < comparison["total_entries"]:
            page = self.post("test/compare", {**body, "page_offset": len(entries)})
            if not page["entries"]:
                break
            entries.extend(page["entries"])
        return {**comparison, "entries": entries}

    def socket_url(self, test_id: str) -> str:
        parts = urlsplit(self.settings.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        path = f"{parts.path.rstrip('/')}/ws/tests/{test_id}/"
        return urlunsplit((scheme, parts.netloc, path, "", ""))

    @contextmanager
    def _socket(self, test_id: str) -> Iterator[ClientConnection | None]:
        """The test's progress socket, or None when it cannot be opened (get still works)."""
        try:
            socket = connect(
                self.socket_url(test_id),
                additional_headers={"X-Api-Key": self.settings.key},
                open_timeout=REQUEST_TIMEOUT_S,
            )
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError):
            yield None
            return
        with socket:
            yield socket

    def wait_for_test(
        self,
        test_id: str,
        *,
        on_progress: Callable[[Progress], None],
        timeout_s: float,
    ) -> dict[str, Any]:
        """Wait until the test is completed or stopped and none of its grades is pending; its get.

        Progress comes from the websocket as it happens; whether it is over is read from get
        (on the events that may end it, and every few seconds in case an event was missed).
        """
        deadline = time.monotonic() + timeout_s
        with self._socket(test_id) as socket:
            detail = self.get_test(test_id)
            progress = progress_of(detail)
            on_progress(progress)
            while True:
                if detail["status"] in FINISHED_TEST_STATUSES and not grades_pending(detail):
                    return detail
                if time.monotonic() >= deadline:
                    raise CliError(f"The test {test_id} did not finish within {timeout_s:g} s.")
                if socket is None:
                    time.sleep(1.0)
                else:
                    progress = self._listen(socket, progress, on_progress, deadline)
                detail = self.get_test(test_id)
                progress = progress_of(detail)
                on_progress(progress)

    def _listen(
        self,
        socket: ClientConnection,
        progress: Progress,
        on_progress: Callable[[Progress], None],
        deadline: float,
    ) -> Progress:
        """Count finished runs from the socket until something may have ended the test."""
        until = min(deadline, time.monotonic() + RECHECK_S)
        while (left := until - time.monotonic()) > 0:
            try:
                message = json.loads(socket.recv(timeout=left))
            except TimeoutError:
                break
            except ConnectionClosed:
                time.sleep(min(1.0, max(0.0, left)))
                break
            kind = message.get("type")
            if kind in {"run.completed", "run.failed", "run.stopped"}:
                progress = Progress(progress.finished + 1, progress.total, progress.status)
                on_progress(progress)
            elif kind in {"test.completed", "test.stopped", "grade.completed", "grade.failed"}:
                break
        return progress
