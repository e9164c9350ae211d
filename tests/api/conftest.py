"""The lifecycle preamble as fixtures: a test the operator started, its first run claimed, and
that run where the replay leaves it. Tests that need several invocations of one test call the
helpers in ``lifecycle_support`` instead."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.lifecycle_support import claimed_invocation, mark_replayed, started_test
from tests_app.models import Test, TestInvocation


@pytest.fixture
def started(operator: Any, benchmark: Any) -> Test:
    """A test of ``benchmark`` started by the operator as an agent: two pending runs."""
    return started_test(operator, benchmark)


@pytest.fixture
def claimed(operator: Any, started: Test) -> TestInvocation:
    """The operator's claim of the first run of ``started``: the invocation is created."""
    return claimed_invocation(operator, started)


@pytest.fixture
def replayed(claimed: TestInvocation) -> TestInvocation:
    """The first run of ``started`` replayed: the invocation replayed, its run running."""
    return mark_replayed(claimed)
