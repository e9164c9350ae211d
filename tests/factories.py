"""factory_boy factories for every model. Defaults build a small, valid, reference-target world."""

from __future__ import annotations

from typing import Any, cast

import factory
from django.contrib.auth.models import User
from django.utils import timezone

from tests_app import models
from tests_app.targets.records import snapshot_of


def conversation(
    turns: int = 3, *, system: str | None = "You are a helpful assistant."
) -> list[dict[str, str]]:
    messages: list[dict[str, str]] = []
    if system:
        messages.append({"role": "system", "content": system})
    for turn in range(1, turns + 1):
        messages.append({"role": "user", "content": f"Question {turn}?"})
        messages.append({"role": "assistant", "content": f"Answer {turn}."})
    return messages


class UserFactory(factory.django.DjangoModelFactory[User]):
    class Meta:
        model = User
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.com")
    password = factory.django.Password("correct-horse-battery")


class DepartmentFactory(factory.django.DjangoModelFactory[models.Department]):
    class Meta:
        model = models.Department

    name = factory.Sequence(lambda n: f"Department {n}")
    slug = factory.Sequence(lambda n: f"department-{n}")


class MembershipFactory(factory.django.DjangoModelFactory[models.Membership]):
    class Meta:
        model = models.Membership

    user = factory.SubFactory(UserFactory)
    department = factory.SubFactory(DepartmentFactory)
    role = models.Membership.Role.VIEWER


class RubricFactory(factory.django.DjangoModelFactory[models.Rubric]):
    class Meta:
        model = models.Rubric

    name = factory.Sequence(lambda n: f"Rubric {n}")
    description = "How well the answers match the references."
    criteria = factory.LazyFunction(
        lambda: [
            {"name": "accuracy", "description": "Facts are right.", "weight": 3},
            {"name": "tone", "description": "Polite and clear.", "weight": 1},
        ]
    )
    pass_threshold = 0.7
    judge_instructions = "Be strict about facts."


class EvalFactory(factory.django.DjangoModelFactory[models.Eval]):
    class Meta:
        model = models.Eval

    name = factory.Sequence(lambda n: f"Eval {n}")
    description = "Measures multi-turn helpfulness."
    department = factory.SubFactory(DepartmentFactory)
    rubric = factory.SubFactory(RubricFactory)


class TargetFactory(factory.django.DjangoModelFactory[models.Target]):
    class Meta:
        model = models.Target

    name = factory.Sequence(lambda n: f"Target {n}")
    department = factory.SubFactory(DepartmentFactory)
    kind = models.Target.Kind.REFERENCE


class OpenAITargetFactory(TargetFactory):
    kind = models.Target.Kind.OPENAI
    model = "gpt-test"
    base_url = "http://127.0.0.1:9/v1"
    api_key_env = "OPENAI_API_KEY"


class BenchmarkFactory(factory.django.DjangoModelFactory[models.Benchmark]):
    class Meta:
        model = models.Benchmark

    name = factory.Sequence(lambda n: f"Benchmark {n}")
    eval = factory.SubFactory(EvalFactory)
    default_target = factory.SubFactory(
        TargetFactory, department=factory.SelfAttribute("..eval.department")
    )
    runs_per_entry = 1


class BenchmarkEntryFactory(factory.django.DjangoModelFactory[models.BenchmarkEntry]):
    class Meta:
        model = models.BenchmarkEntry

    benchmark = factory.SubFactory(BenchmarkFactory)
    position = factory.Sequence(lambda n: n + 1)
    title = factory.Sequence(lambda n: f"Conversation {n}")
    messages = factory.LazyFunction(conversation)


class TestFactory(factory.django.DjangoModelFactory[models.Test]):
    __test__ = False

    class Meta:
        model = models.Test

    benchmark = factory.SubFactory(BenchmarkFactory)
    eval = factory.LazyAttribute(lambda o: o.benchmark.eval)
    department = factory.LazyAttribute(lambda o: o.benchmark.eval.department)
    target = factory.LazyAttribute(lambda o: o.benchmark.default_target)
    target_snapshot = factory.LazyAttribute(lambda o: snapshot_of(o.target))


class TestRunFactory(factory.django.DjangoModelFactory[models.TestRun]):
    __test__ = False

    class Meta:
        model = models.TestRun

    test = factory.SubFactory(TestFactory)
    entry = factory.SubFactory(
        BenchmarkEntryFactory, benchmark=factory.SelfAttribute("..test.benchmark")
    )
    cycle = 1
    ordinal = factory.Sequence(lambda n: n + 1)


class TestInvocationFactory(factory.django.DjangoModelFactory[models.TestInvocation]):
    __test__ = False

    class Meta:
        model = models.TestInvocation

    run = factory.SubFactory(TestRunFactory)
    test = factory.SelfAttribute("run.test")


class ReplayStepFactory(factory.django.DjangoModelFactory[models.ReplayStep]):
    class Meta:
        model = models.ReplayStep

    invocation = factory.SubFactory(TestInvocationFactory)
    turn = factory.Sequence(lambda n: n + 1)
    input = "Question?"
    output = "Answer."
    reference = "Answer."
    latency_ms = 5


class GradeFactory(factory.django.DjangoModelFactory[models.Grade]):
    class Meta:
        model = models.Grade

    invocation = factory.SubFactory(TestInvocationFactory)
    source = models.Grade.Source.AGENT
    status = models.Grade.Status.DONE
    score = 0.8
    passed = True
    feedback = "Good."


class RunAllFactory(factory.django.DjangoModelFactory[models.RunAll]):
    class Meta:
        model = models.RunAll

    test = factory.SubFactory(TestFactory)
    concurrency = 2
    started_by = factory.LazyAttribute(lambda o: o.test.created_by)


class UploadFactory(factory.django.DjangoModelFactory[models.Upload]):
    class Meta:
        model = models.Upload

    test = factory.SubFactory(TestFactory)
    file = factory.django.FileField(filename="export.zip", data=b"PK")
    file_name = "export.zip"
    row_count = 0
    size_bytes = 2


def make_api_key(user: Any, name: str = "test key") -> tuple[models.ApiKey, str]:
    api_key, key = models.ApiKey.objects.create_key(user=user, name=name)
    return cast(models.ApiKey, api_key), key


def target_from_config(
    department: models.Department, config: dict[str, Any], **fields: Any
) -> models.Target:
    """A target row with the settings of a target JSON as it was written before targets were
    rows (``{"kind": "openai", "model": ..., ...}``), unvalidated: tests of bad targets need it."""
    settings = {key: value for key, value in config.items() if key != "kind"}
    for name in ("base_url", "api_key_env", "model"):
        if settings.get(name) is None:
            settings.pop(name, None)
    return TargetFactory.create(
        department=department, kind=config.get("kind", "reference"), **settings, **fields
    )


def make_benchmark(
    *,
    department: models.Department,
    entries: int = 2,
    turns: int = 3,
    target: dict[str, Any] | models.Target | None = None,
    **kwargs: Any,
) -> models.Benchmark:
    """A benchmark of ``entries`` conversations whose default target is ``target`` (a row, or a
    target JSON made into a row), else a new reference target of the department."""
    if isinstance(target, dict):
        target = target_from_config(department, target)
    if target is not None:
        kwargs["default_target"] = target
    benchmark = BenchmarkFactory.create(eval__department=department, **kwargs)
    for position in range(1, entries + 1):
        BenchmarkEntryFactory.create(
            benchmark=benchmark, position=position, messages=conversation(turns)
        )
    return benchmark


Outcome = tuple[float, bool | None] | None  # (score, passed) of a run; None: not graded


def make_graded_test(
    benchmark: models.Benchmark,
    outcomes: list[list[Outcome]],
    *,
    target: Any = None,
    actor: Any = None,
    **fields: Any,
) -> models.Test:
    """A test of ``benchmark`` whose entry i (by position) has the runs ``outcomes[i]``, each
    with one ended invocation (by ``actor``); written in bulk."""
    target = target or benchmark.default_target
    test = TestFactory.create(
        benchmark=benchmark, target=target, status=models.Test.Status.COMPLETED, **fields
    )
    entries = list(benchmark.entries.order_by("position").values_list("pk", flat=True))
    runs: list[models.TestRun] = []
    for entry_id, entry_runs in zip(entries, outcomes, strict=False):
        for outcome in entry_runs:
            score, passed = outcome if outcome is not None else (None, None)
            runs.append(
                models.TestRun(
                    test=test,
                    entry_id=entry_id,
                    cycle=1,
                    ordinal=len(runs) + 1,
                    status=models.TestRun.Status.COMPLETED
                    if outcome
                    else models.TestRun.Status.PENDING,
                    score=score,
                    passed=passed,
                )
            )
    models.TestRun.objects.bulk_create(runs, batch_size=1000)
    invocations = models.TestInvocation.objects.bulk_create(
        [models.TestInvocation(test=test, run=run, status="ended", actor=actor) for run in runs],
        batch_size=1000,
    )
    for run, invocation in zip(runs, invocations, strict=True):
        run.latest_invocation = invocation
    models.TestRun.objects.bulk_update(runs, ["latest_invocation"], batch_size=1000)
    return test


def now() -> Any:
    return timezone.now()
