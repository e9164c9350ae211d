"""``create_api_key --user USERNAME --name NAME``: issue an API key and print it once.

The key alone goes to stdout (so ``KEY=$(manage.py create_api_key ...)`` works); the reminder that
it cannot be shown again goes to stderr.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tests_app.models import ApiKey
from tests_app.services.api_keys import create_api_key

NAME_MAX_LENGTH = ApiKey._meta.get_field("name").max_length or 50


class Command(BaseCommand):
    help = "Create an API key for a user and print it once (only its hash is stored)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, help="The username the key acts as.")
        parser.add_argument("--name", required=True, help="A label for the key, e.g. 'ci agent'.")

    def handle(self, *args: Any, **options: Any) -> None:
        username = options["user"]
        name = options["name"].strip()
        if not name:
            raise CommandError("--name must not be empty.")
        if len(name) > NAME_MAX_LENGTH:
            raise CommandError(f"--name is longer than {NAME_MAX_LENGTH} characters.")
        user_model = get_user_model()
        user = user_model._default_manager.filter(**{user_model.USERNAME_FIELD: username}).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        if not user.is_active:
            raise CommandError(f"The user {username!r} is inactive; a key would not work.")
        api_key, raw_key = create_api_key(user=user, name=name)
        self.stdout.write(raw_key)
        self.stderr.write(
            f"API key {name!r} for {username} (prefix {api_key.prefix}). "
            "Store it now: it is kept only as a hash and cannot be shown again."
        )
