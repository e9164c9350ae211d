"""Template context of every page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest

from tests_app.admin_site import may_use_admin


def navigation(request: HttpRequest) -> dict[str, Callable[[], bool] | Any]:
    # A callable: templates call it only on pages that show the navigation.
    return {"may_use_admin": lambda: may_use_admin(request.user)}
