"""The domain of DESIGN §2.

Status fields are only ever changed by functions in ``tests_app.services``; the choices here are
the vocabulary, the services own the transitions.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from rest_framework_api_key.models import AbstractAPIKey, BaseAPIKeyManager


class BaseModel(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # A default rather than auto_now_add, so that imports and benchmarks can set it.
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


# --- organisation ---------------------------------------------------------------------------


class Department(BaseModel):
    name = models.CharField(max_length=200, unique=True)
    slug = models.SlugField(max_length=100, unique=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(BaseModel):
    class Role(models.TextChoices):
        VIEWER = "viewer", "Viewer"
        OPERATOR = "operator", "Operator"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    department = models.ForeignKey(Department, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "department"], name="membership_unique_user"),
            models.CheckConstraint(
                condition=Q(role__in=["viewer", "operator"]), name="membership_role_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} · {self.department} ({self.role})"


# --- what is measured -----------------------------------------------------------------------


class Rubric(BaseModel):
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    criteria = models.JSONField(
        default=list,
        blank=True,
        help_text='A list of {"name", "description", "weight"}; weights need not sum to 1.',
    )
    pass_threshold = models.FloatField(
        default=0.7, help_text="A run passes when its weighted score is at least this (0..1)."
    )
    judge_instructions = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(pass_threshold__gte=0) & Q(pass_threshold__lte=1),
                name="rubric_threshold_0_1",
            )
        ]

    def __str__(self) -> str:
        return self.name


class Eval(BaseModel):
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    department = models.ForeignKey(Department, on_delete=models.PROTECT, related_name="evals")
    rubric = models.ForeignKey(Rubric, on_delete=models.PROTECT, related_name="evals")

    class Meta:
        ordering = ["name"]
        verbose_name = "eval"

    def __str__(self) -> str:
        return self.name


class Target(BaseModel):
    """The model under test (DESIGN §2, §4), kept by operators in the admin for one department.

    Never a secret: ``api_key_env`` names the environment variable that holds the key, which the
    worker reads at call time. A test freezes the configuration it ran with at start
    (``Test.target_snapshot``), so editing a target changes only the tests started afterwards.
    """

    class Kind(models.TextChoices):
        OPENAI = "openai", "OpenAI-compatible chat completions server"
        REFERENCE = "reference", "Reference (answers with the recorded replies, offline)"

    name = models.CharField(max_length=200)
    department = models.ForeignKey(Department, on_delete=models.PROTECT, related_name="targets")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.REFERENCE)
    model = models.CharField(
        max_length=200, blank=True, help_text="The model name the server knows (openai only)."
    )
    base_url = models.URLField(
        max_length=500,
        blank=True,
        help_text="e.g. http://127.0.0.1:11434/v1; empty: OPENAI_BASE_URL, else OpenAI's.",
    )
    api_key_env = models.CharField(
        max_length=100,
        blank=True,
        help_text="The NAME of the environment variable that holds the key, never the key.",
    )
    temperature = models.FloatField(default=0.0)
    max_tokens = models.PositiveIntegerField(null=True, blank=True)
    seed = models.BigIntegerField(null=True, blank=True)
    timeout_s = models.FloatField(default=60.0, help_text="Per attempt, in seconds.")
    max_retries = models.PositiveSmallIntegerField(default=2)
    price_in = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        help_text="Price per million input (prompt) tokens; empty: cost is not computed.",
    )
    price_out = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        help_text="Price per million output (completion) tokens; empty: cost is not computed.",
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["department", "name"], name="target_unique_name"),
            models.CheckConstraint(
                condition=Q(kind__in=["openai", "reference"]), name="target_kind_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Benchmark(BaseModel):
    class ReplayMode(models.TextChoices):
        AUTOREGRESSIVE = "autoregressive", "Auto-regressive (the model sees its own answers)"
        TEACHER_FORCED = "teacher_forced", "Teacher-forced (the model sees the recorded answers)"

    name = models.CharField(max_length=200)
    eval = models.ForeignKey(Eval, on_delete=models.PROTECT, related_name="benchmarks")
    default_target = models.ForeignKey(
        Target,
        on_delete=models.PROTECT,
        related_name="benchmarks",
        help_text="What start tests against when the caller names no target_id.",
    )
    runs_per_entry = models.PositiveIntegerField(default=1)
    replay_mode = models.CharField(
        max_length=20, choices=ReplayMode.choices, default=ReplayMode.AUTOREGRESSIVE
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(runs_per_entry__gte=1), name="benchmark_runs_per_entry_positive"
            )
        ]

    def __str__(self) -> str:
        return self.name


class BenchmarkEntry(BaseModel):
    benchmark = models.ForeignKey(Benchmark, on_delete=models.CASCADE, related_name="entries")
    # Left empty, the entry goes after the benchmark's last one (see save).
    position = models.PositiveIntegerField(
        blank=True, help_text="Order within the benchmark; empty: after the last entry."
    )
    title = models.CharField(max_length=300, blank=True)
    messages = models.JSONField(
        default=list, help_text="The recorded conversation in OpenAI chat format."
    )
    # Number of user turns, kept with the messages so lists need not parse them.
    turns = models.PositiveIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["benchmark", "position"]
        verbose_name_plural = "benchmark entries"
        constraints = [
            models.UniqueConstraint(fields=["benchmark", "position"], name="entry_unique_position")
        ]

    def __str__(self) -> str:
        return self.title or f"Entry {self.position}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.position is None:
            # Numbered here so that every writer (the admin and its inline, imports, a shell)
            # gets the same rule. Two entries saved at once may pick the same number: the unique
            # constraint then refuses the second rather than ordering them silently.
            self.position = next_entry_position(self.benchmark_id)
        self.turns = count_user_turns(self.messages)
        if kwargs.get("update_fields") is not None and "messages" in kwargs["update_fields"]:
            kwargs["update_fields"] = {*kwargs["update_fields"], "turns"}
        super().save(*args, **kwargs)


def next_entry_position(benchmark_id: Any) -> int:
    """One after the benchmark's last entry (1 for the first)."""
    last = BenchmarkEntry.objects.filter(benchmark_id=benchmark_id).aggregate(
        last=models.Max("position")
    )["last"]
    return (last or 0) + 1


def count_user_turns(messages: Any) -> int:
    if not isinstance(messages, list):
        return 0
    return sum(
        1 for message in messages if isinstance(message, dict) and message.get("role") == "user"
    )


# --- execution ------------------------------------------------------------------------------


class Test(BaseModel):
    __test__ = False  # not a pytest test class

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        COMPLETED = "completed"
        STOPPED = "stopped"

    benchmark = models.ForeignKey(Benchmark, on_delete=models.PROTECT, related_name="tests")
    # Copied from the benchmark at start so search filters and scoping need no joins.
    eval = models.ForeignKey(Eval, on_delete=models.PROTECT, related_name="tests")
    department = models.ForeignKey(Department, on_delete=models.PROTECT, related_name="tests")
    target = models.ForeignKey(Target, on_delete=models.PROTECT, related_name="tests")
    # The target's configuration when the test started: what the replays call, whatever later
    # edits of the target say (tests_app.targets.records.snapshot_of).
    target_snapshot = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    infinite_mode = models.BooleanField(default=False)
    cycle = models.PositiveIntegerField(default=1)
    is_archived = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    current_invocation = models.ForeignKey(
        "TestInvocation", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Denormalized counters, moved in the same transaction as the change they count.
    total_runs = models.PositiveIntegerField(default=0)
    completed_runs = models.PositiveIntegerField(default=0)
    graded_runs = models.PositiveIntegerField(default=0)
    passed_runs = models.PositiveIntegerField(default=0)
    score_sum = models.FloatField(default=0)
    # Grades asked of the judge and not yet settled (done or failed): a client that saw
    # test.completed waits until this is 0 for the last grades (docs/realtime.md).
    pending_grades = models.PositiveIntegerField(default=0)
    # The last sequence number given to a realtime event of this test.
    event_seq = models.PositiveBigIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["-created_at", "id"], name="test_created_idx"),
            models.Index(fields=["department", "-created_at"], name="test_department_created_idx"),
            models.Index(fields=["eval", "-created_at"], name="test_eval_created_idx"),
            models.Index(fields=["is_archived", "-created_at"], name="test_archived_created_idx"),
            models.Index(fields=["benchmark", "-created_at"], name="test_benchmark_created_idx"),
            models.Index(fields=["target", "-created_at"], name="test_target_created_idx"),
        ]

    def __str__(self) -> str:
        return f"Test {str(self.id)[:8]} of {self.benchmark_id}"

    @property
    def pass_rate(self) -> float | None:
        return self.passed_runs / self.graded_runs if self.graded_runs else None

    @property
    def mean_score(self) -> float | None:
        return self.score_sum / self.graded_runs if self.graded_runs else None


class TestRun(BaseModel):
    __test__ = False

    class Status(models.TextChoices):
        PENDING = "pending"
        CLAIMED = "claimed"
        RUNNING = "running"
        COMPLETED = "completed"
        FAILED = "failed"
        STOPPED = "stopped"

    test = models.ForeignKey(Test, on_delete=models.CASCADE, related_name="runs")
    entry = models.ForeignKey(BenchmarkEntry, on_delete=models.PROTECT, related_name="runs")
    cycle = models.PositiveIntegerField(default=1)
    ordinal = models.PositiveIntegerField(help_text="1-based position within its cycle.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    latest_invocation = models.ForeignKey(
        "TestInvocation", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The current grade of the run, denormalized for lists and counters.
    score = models.FloatField(null=True, blank=True)
    passed = models.BooleanField(null=True, blank=True)

    class Meta:
        ordering = ["cycle", "ordinal"]
        constraints = [
            models.UniqueConstraint(fields=["test", "cycle", "ordinal"], name="run_unique_ordinal"),
            models.CheckConstraint(
                condition=Q(score__isnull=True) | (Q(score__gte=0) & Q(score__lte=1)),
                name="run_score_0_1",
            ),
        ]
        indexes = [
            models.Index(fields=["test", "status", "cycle", "ordinal"], name="run_claim_idx"),
        ]

    def __str__(self) -> str:
        return f"Run {self.cycle}.{self.ordinal}"


class TestInvocation(BaseModel):
    __test__ = False

    class Status(models.TextChoices):
        CREATED = "created"
        RUNNING = "running"
        REPLAYED = "replayed"
        ENDED = "ended"
        FAILED = "failed"
        STOPPED = "stopped"

    class Client(models.TextChoices):
        BROWSER = "browser"
        AGENT = "agent"
        MCP = "mcp"

    test = models.ForeignKey(Test, on_delete=models.CASCADE, related_name="invocations")
    run = models.ForeignKey(TestRun, on_delete=models.CASCADE, related_name="invocations")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CREATED)
    client = models.CharField(max_length=16, choices=Client.choices, default=Client.AGENT)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    task_id = models.CharField(max_length=255, blank=True)
    # When its replay was last handed to the workers (run, or the sweep enqueueing it again).
    enqueued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    stop_requested = models.BooleanField(default=False)
    steps_count = models.PositiveIntegerField(default=0)
    # The run-all that claimed it, if one did; null for an agent's or a browser's own claim.
    run_all = models.ForeignKey(
        "RunAll",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="invocations",
        db_index=False,
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["test", "-created_at"], name="invocation_test_created_idx"),
            # Only the few invocations a run-all claimed: its in-flight count and its runs.
            models.Index(
                fields=["run_all", "status"],
                name="invocation_run_all_idx",
                condition=Q(run_all__isnull=False),
            ),
            models.Index(fields=["status", "heartbeat_at"], name="invocation_heartbeat_idx"),
            models.Index(fields=["status", "enqueued_at"], name="invocation_enqueued_idx"),
            # get's current invocation: the newest one not yet ended. Few invocations are open
            # at a time, so this index stays small, where the one above made get walk every
            # ended invocation of the test to find that there is none.
            models.Index(
                fields=["test", "-created_at", "-id"],
                name="invocation_open_idx",
                condition=Q(status__in=["created", "running", "replayed"]),
            ),
        ]

    def __str__(self) -> str:
        return f"Invocation {str(self.id)[:8]} ({self.status})"


class RunAll(BaseModel):
    """Workers driving a whole test: they claim, replay and end its pending runs through the
    same services agents use, at most ``concurrency`` at once (tests_app.services.run_all).

    Its state is here rather than in a worker, so that it survives worker restarts: whoever ticks
    it (a replay that finished, the sweep) reads what to do from this row and its invocations.
    """

    class Status(models.TextChoices):
        ACTIVE = "active"
        FINISHED = "finished"
        STOPPED = "stopped"

    class Grading(models.TextChoices):
        AI = "ai", "The configured judge (the offline reference grader without one)"
        NONE = "none", "Ended ungraded"

    test = models.ForeignKey(Test, on_delete=models.CASCADE, related_name="run_alls")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    concurrency = models.PositiveSmallIntegerField()
    grade = models.CharField(max_length=8, choices=Grading.choices, default=Grading.AI)
    max_runs = models.PositiveIntegerField(null=True, blank=True)
    # Invocations are claimed as this user, through this client: the starter's, so that scope
    # and the record say who drove them.
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    client = models.CharField(
        max_length=16, choices=TestInvocation.Client.choices, default=TestInvocation.Client.BROWSER
    )
    # When it was last ticked: the sweep ticks an active run-all whose tick is older than
    # RUN_ALL_STALL_TIMEOUT, so one whose worker died is not stranded.
    ticked_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    finish_reason = models.CharField(max_length=32, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "run-all"
        constraints = [
            # One at a time per test: a second start is a 409 (and this is the backstop).
            models.UniqueConstraint(
                fields=["test"], condition=Q(status="active"), name="run_all_one_active_per_test"
            ),
            models.CheckConstraint(
                condition=Q(concurrency__gte=1) & Q(concurrency__lte=64),
                name="run_all_concurrency_1_64",
            ),
            models.CheckConstraint(
                condition=Q(max_runs__isnull=True) | Q(max_runs__gte=1),
                name="run_all_max_runs_positive",
            ),
        ]
        indexes = [
            models.Index(
                fields=["ticked_at"], name="run_all_active_idx", condition=Q(status="active")
            )
        ]

    def __str__(self) -> str:
        return f"Run-all {str(self.id)[:8]} ({self.status})"


class ReplayStep(BaseModel):
    invocation = models.ForeignKey(TestInvocation, on_delete=models.CASCADE, related_name="steps")
    turn = models.PositiveIntegerField(help_text="1-based index of the user turn.")
    input = models.TextField(help_text="The user message of this turn.")
    output = models.TextField(blank=True)
    # None means "no recorded answer for this turn", which differs from an empty answer.
    reference = models.TextField(null=True, blank=True)  # noqa: DJ001
    latency_ms = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["invocation", "turn"]
        constraints = [
            models.UniqueConstraint(fields=["invocation", "turn"], name="step_unique_turn")
        ]

    def __str__(self) -> str:
        return f"Turn {self.turn}"


class Grade(BaseModel):
    class Source(models.TextChoices):
        AI = "ai", "AI judge"
        REFERENCE = "reference", "Reference comparison (offline, not an AI)"
        AGENT = "agent", "Agent"
        HUMAN = "human", "Human"

    class Status(models.TextChoices):
        PENDING = "pending"
        DONE = "done"
        FAILED = "failed"

    invocation = models.ForeignKey(TestInvocation, on_delete=models.CASCADE, related_name="grades")
    source = models.CharField(max_length=16, choices=Source.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    score = models.FloatField(null=True, blank=True)
    passed = models.BooleanField(null=True, blank=True)
    feedback = models.TextField(blank=True)
    criteria_scores = models.JSONField(default=list, blank=True)
    provenance = models.JSONField(default=dict, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.TextField(blank=True, help_text="Why a human overrode the earlier grade.")

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(score__isnull=True) | (Q(score__gte=0) & Q(score__lte=1)),
                name="grade_score_0_1",
            )
        ]
        indexes = [
            models.Index(fields=["invocation", "status", "-created_at"], name="grade_current_idx")
        ]

    def __str__(self) -> str:
        return f"{self.get_source_display()} grade ({self.status})"


class Upload(BaseModel):
    class Kind(models.TextChoices):
        EXPORT = "export"

    test = models.ForeignKey(Test, on_delete=models.CASCADE, related_name="uploads")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.EXPORT)
    file = models.FileField(upload_to="exports/%Y/%m/", max_length=500)
    file_name = models.CharField(max_length=255)
    row_count = models.PositiveIntegerField(default=0)
    size_bytes = models.PositiveBigIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.file_name


# --- API keys -------------------------------------------------------------------------------


class ApiKeyManager(BaseAPIKeyManager):
    def assign_key(self, obj: AbstractAPIKey) -> str:
        # The library makes "prefix.hash" the primary key; we keep UUID keys like every other
        # table (the prefix and the hash still live in their own columns).
        key = super().assign_key(obj)
        obj.id = uuid.uuid4()  # type: ignore[assignment]
        return key


class ApiKey(AbstractAPIKey):
    """An API key of one user. Only the hash is stored; the key is shown once, at creation."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)  # type: ignore[assignment]
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    last_used_at = models.DateTimeField(null=True, blank=True)

    objects = ApiKeyManager()  # type: ignore[assignment,misc]

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"


# --- derived counts -------------------------------------------------------------------------


class TestDayCount(models.Model):
    """How many tests exist per (eval, department, target, archived flag, UTC day of
    ``created_at``).

    Derived data, kept by database triggers on the tests table (migrations 0003, 0006) in the
    same transaction as every insert, delete and change of those five columns, whoever writes
    them (services, the admin, bulk loads): search sums these rows for its exact total and facets
    instead of counting a million tests. Plain id columns rather than foreign keys, so that an
    eval, department or target whose tests are gone can still be deleted (its rows then count
    zero).
    """

    __test__ = False

    id = models.BigAutoField(primary_key=True)
    eval_id = models.UUIDField()
    department_id = models.UUIDField()
    target_id = models.UUIDField()
    is_archived = models.BooleanField()
    day = models.DateField()
    count = models.IntegerField(default=0)

    class Meta:
        constraints = [
            # Day first: a date range reads a range of the index.
            models.UniqueConstraint(
                fields=["day", "eval_id", "department_id", "target_id", "is_archived"],
                name="test_day_count_target_key",
            )
        ]

    def __str__(self) -> str:
        return f"{self.count} tests of {self.eval_id} on {self.day}"


class TestTurnCount(models.Model):
    """Replayed turns per (test, cycle, latency in ms), with the tokens those turns used.

    Derived data, kept by database triggers on the replay steps table (migration 0007) in the same
    transaction as every insert, delete and change of a step, whoever writes it: the latency
    percentiles, tokens and cost of a test (get, compare) read at most one row per distinct
    latency instead of every step of every invocation. ``reported_turns`` counts the turns whose
    target reported tokens (the reference target reports none). Plain id columns, like
    TestDayCount.
    """

    __test__ = False

    id = models.BigAutoField(primary_key=True)
    test_id = models.UUIDField()
    cycle = models.PositiveIntegerField()
    latency_ms = models.PositiveIntegerField()
    turns = models.IntegerField(default=0)
    reported_turns = models.IntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["test_id", "cycle", "latency_ms"], name="test_turn_count_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.turns} turns of {self.test_id} at {self.latency_ms} ms"
