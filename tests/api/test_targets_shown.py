"""get and export say what a test ran against, even after its target was edited."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from typing import Any

import pytest

from tests import factories
from tests.api.lifecycle_support import post
from tests_app.actors import Actor
from tests_app.models import Upload
from tests_app.services.starting import start_test

pytestmark = pytest.mark.django_db


@pytest.fixture
def edited_test(operator: Any, research: Any) -> Any:
    """A test started against a local model, whose target was renamed and repointed since."""
    target = factories.OpenAITargetFactory.create(
        department=research, name="Local", model="qwen2.5:7b"
    )
    benchmark = factories.make_benchmark(department=research, entries=2, target=target)
    test = start_test(actor=Actor(user=operator), benchmark_id=benchmark.pk)
    target.name, target.model = "Local v2", "qwen2.5:14b"
    target.save()
    return test


def test_get_names_the_target_with_the_model_that_ran(
    client_for: Any, viewer: Any, edited_test: Any
) -> None:
    body = post(client_for(viewer), "get", {"test_id": str(edited_test.pk)}).json()

    assert body["test"]["target"] == {
        "id": str(edited_test.target_id),
        "name": "Local v2",
        "kind": "openai",
        "model": "qwen2.5:7b",
    }


def test_export_carries_the_target_in_the_manifest_and_runs_csv(
    client_for: Any, viewer: Any, edited_test: Any, settings: Any, tmp_path: Any
) -> None:
    settings.MEDIA_ROOT = tmp_path
    answer = post(client_for(viewer), "export", {"test_id": str(edited_test.pk)}).json()

    upload = Upload.objects.get(pk=answer["upload_id"])
    with upload.file.open("rb") as handle, zipfile.ZipFile(io.BytesIO(handle.read())) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        runs = list(csv.DictReader(io.StringIO(archive.read("runs.csv").decode())))
    target = manifest["test"]["target"]
    assert (target["id"], target["name"]) == (str(edited_test.target_id), "Local v2")
    assert target["snapshot"] == edited_test.target_snapshot
    assert target["snapshot"]["model"] == "qwen2.5:7b"
    assert len(runs) == 2
    assert {(row["target_id"], row["target_name"], row["model"]) for row in runs} == {
        (str(edited_test.target_id), "Local v2", "qwen2.5:7b")
    }
