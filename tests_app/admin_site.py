"""The admin site: staff as Django has it, plus department operators scoped to their departments.

Operators are not staff (``is_staff`` means "sees every department" here, DESIGN §3), so Django's
own site would refuse them. This site also lets in an active user who operates at least one
department; what such a user may see and change is decided per model in ``tests_app.admin`` by
``DepartmentScopedAdmin`` (docs/admin.md). Viewers have no admin: they read through the pages.

Installed in place of ``django.contrib.admin`` (``tests_app.apps.AdminConfig``), so ``admin.site``
and ``@admin.register`` everywhere use it.
"""

from __future__ import annotations

from typing import Any

from django.contrib.admin import AdminSite
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from tests_app.selectors.scope import operable_department_ids


def may_use_admin(user: Any) -> bool:
    """Staff, or an active operator of at least one department."""
    if not user.is_authenticated or not user.is_active:
        return False
    return bool(user.is_staff) or bool(operable_department_ids(user))


class OperatorAuthenticationForm(AdminAuthenticationForm):
    """The admin's login form, which Django limits to staff, also lets operators in."""

    def confirm_login_allowed(self, user: Any) -> None:
        if not user.is_active or not may_use_admin(user):
            raise ValidationError(
                self.error_messages["invalid_login"],
                code="invalid_login",
                params={"username": self.username_field.verbose_name},
            )


class ReplaybenchAdminSite(AdminSite):
    login_form = OperatorAuthenticationForm

    def has_permission(self, request: HttpRequest) -> bool:
        return may_use_admin(request.user)
