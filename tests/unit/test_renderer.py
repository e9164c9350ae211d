"""The API's JSON renderer (orjson) writes values as DRF's fields and JSON renderer would.

Views hand it plain data with UUIDs and datetimes in it (get's large answer skips the output
serializer), so each such value must come out as the documented field renders it.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from rest_framework.fields import DateTimeField, UUIDField
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView


def render(data: Any) -> Any:
    renderer = APIView.renderer_classes[0]()
    return json.loads(renderer.render(data))


def test_it_is_orjson() -> None:
    assert settings.REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"] == [
        "drf_orjson_renderer.renderers.ORJSONRenderer"
    ]


def test_ids_and_timestamps_are_what_the_fields_render() -> None:
    an_id = uuid.uuid4()
    with_microseconds = datetime(2026, 11, 25, 2, 56, 4, 123456, tzinfo=UTC)
    on_the_second = datetime(2026, 11, 25, 2, 56, 4, tzinfo=UTC)

    rendered = render(
        {"id": an_id, "at": [with_microseconds, on_the_second], "nested": {"none": None}}
    )

    assert rendered == {
        "id": UUIDField().to_representation(an_id),
        "at": [
            DateTimeField().to_representation(with_microseconds),
            DateTimeField().to_representation(on_the_second),
        ],
        "nested": {"none": None},
    }
    assert rendered["at"] == ["2026-11-25T02:56:04.123456Z", "2026-11-25T02:56:04Z"]


def test_plain_data_is_what_drfs_renderer_writes() -> None:
    data = {
        "text": "naïve \u2013 ünïcode \u2028",
        "score": 0.1 + 0.2,
        "n": 3,
        "ok": True,
        "x": None,
    }

    assert render(data) == json.loads(JSONRenderer().render(data))


def test_a_uuid_key_is_written_as_its_string() -> None:
    an_id = uuid.uuid4()

    assert render({an_id: 1}) == {str(an_id): 1}
