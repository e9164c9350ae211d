"""Reads of uploads (exports), scoped to the tests the caller may see."""

from __future__ import annotations

import uuid
from typing import Any

from tests_app.errors import NotFound
from tests_app.models import Upload
from tests_app.selectors import scope


def get_visible_upload(*, user: Any, upload_id: uuid.UUID | str) -> Upload:
    """The upload if the caller may see its test; otherwise 404, so ids do not leak."""
    upload = Upload.objects.select_related("test").filter(pk=upload_id).first()
    if upload is None or not scope.can_see_department(user, upload.test.department_id):
        raise NotFound("No upload with that id is visible to you.")
    return upload
