"""Bounds that every paged list shares, in the API and on the pages."""

from __future__ import annotations

# Far beyond any real list, and well inside the 64-bit OFFSET that both databases take: a
# larger offset is a 400 in the API and the last (empty) page on the pages, never a crash.
MAX_PAGE_OFFSET = 1_000_000_000
