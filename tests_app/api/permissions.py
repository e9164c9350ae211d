"""The API's default permission: authenticated, with failed attempts counted per address."""

from __future__ import annotations

from typing import Any

from rest_framework import permissions
from rest_framework.request import Request

from tests_app.api.throttling import count_failed_authentication


class IsAuthenticated(permissions.IsAuthenticated):
    """DRF's, where a call without valid credentials also spends its address's budget of
    failed authentications (a 429 once it is spent, a 401 before)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if super().has_permission(request, view):
            return True
        count_failed_authentication(request)
        return False
