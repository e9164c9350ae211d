"""search, docs, refresh, export; and the download of an export."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import IO, Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import FileResponse, HttpResponseBase, StreamingHttpResponse
from django.utils.http import content_disposition_header
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.decorators import action
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tests_app.api import discovery_serializers as s
from tests_app.api import operations
from tests_app.api import schema as _schema_extensions  # noqa: F401  # registers auth schemes
from tests_app.api.authentication import actor_from_request
from tests_app.api.base import error_responses, parse_body
from tests_app.selectors.docs import get_test_docs
from tests_app.selectors.uploads import get_visible_upload
from tests_app.services.refresh import refresh

DOWNLOAD_CHUNK_BYTES = 64 * 1024


class DiscoveryActions:
    @extend_schema(
        summary="Search Test",
        description=(
            "Search the tests the caller may see: filters combine with AND, newest first, an "
            "exact total_count, and eval/department/target facet sections whose counts leave "
            "out the section's own filter."
        ),
        request=s.SearchTestInputSerializer,
        responses={200: s.SearchTestResponseSerializer, **error_responses(400, 401)},
    )
    @action(detail=False, methods=["post"])
    def search(self, request: Request) -> Response:
        data = parse_body(s.SearchTestInputSerializer, request)
        return Response(operations.search(actor_from_request(request), data))

    @extend_schema(
        summary="Get Test Docs Endpoint",
        description=(
            "Documentation composed from the code: fields and help texts, every operation with "
            "whether the caller may use it; with entity_id, specialized to that test."
        ),
        request=s.DocsTestInputSerializer,
        responses={200: s.TestDocsResponseSerializer, **error_responses(400, 401, 404)},
    )
    @action(detail=False, methods=["post"])
    def docs(self, request: Request) -> Response:
        data = parse_body(s.DocsTestInputSerializer, request)
        result = get_test_docs(user=request.user, entity_id=data["entity_id"])
        return Response(s.TestDocsResponseSerializer(result).data)

    @extend_schema(
        summary="Test Refresh",
        description="Refresh the analytics views and invalidate the test caches (staff only).",
        request=None,
        responses={200: s.RefreshTestResponseSerializer, **error_responses(400, 401, 403)},
    )
    @action(detail=False, methods=["post"])
    def refresh(self, request: Request) -> Response:
        parse_body(s.RefreshTestInputSerializer, request)
        result = refresh(actor=actor_from_request(request))
        return Response(
            s.RefreshTestResponseSerializer(
                {
                    "success": True,
                    "refreshed_views": result.refreshed_views,
                    "invalidated_tags": result.invalidated_tags,
                }
            ).data
        )

    @extend_schema(
        summary="Export Test",
        description=(
            "Export the test as a ZIP (manifest.json, runs.csv, turns.csv); download it with "
            "GET /api/v5/uploads/<upload_id>/download."
        ),
        request=s.ExportTestInputSerializer,
        responses={200: s.ExportTestResponseSerializer, **error_responses(400, 401, 404)},
    )
    @action(detail=False, methods=["post"])
    def export(self, request: Request) -> Response:
        data = parse_body(s.ExportTestInputSerializer, request)
        return Response(operations.export(actor_from_request(request), data))


class AnyAcceptNegotiation(BaseContentNegotiation):
    """The download answers a ZIP whatever the Accept header says (errors stay JSON)."""

    def select_parser(self, request: Request, parsers: Any) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(self, request: Request, renderers: Any, format_suffix: Any = None) -> Any:
        return renderers[0], renderers[0].media_type


async def _read_async(handle: IO[bytes]) -> AsyncIterator[bytes]:
    # Off the shared sync thread (thread_sensitive=False): file reads must not queue behind views.
    read = sync_to_async(handle.read, thread_sensitive=False)
    try:
        while chunk := await read(DOWNLOAD_CHUNK_BYTES):
            yield chunk
    finally:
        await sync_to_async(handle.close, thread_sensitive=False)()


class UploadDownloadView(APIView):
    content_negotiation_class = AnyAcceptNegotiation

    @extend_schema(
        summary="Download Export",
        description="Stream an export's ZIP to a caller who may see its test.",
        responses={
            (200, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY, description="The ZIP."),
            **error_responses(401, 404),
        },
    )
    def get(self, request: Request, upload_id: Any) -> HttpResponseBase:
        upload = get_visible_upload(user=request.user, upload_id=upload_id)
        handle = upload.file.open("rb")
        if isinstance(request._request, ASGIRequest):
            # Under ASGI a synchronous iterator would be read whole into memory before sending.
            response: HttpResponseBase = StreamingHttpResponse(
                _read_async(handle), content_type="application/zip"
            )
            response["Content-Length"] = str(upload.size_bytes)
            response["Content-Disposition"] = (
                content_disposition_header(as_attachment=True, filename=upload.file_name) or ""
            )
            return response
        return FileResponse(
            handle,
            as_attachment=True,
            filename=upload.file_name,
            content_type="application/zip",
        )
