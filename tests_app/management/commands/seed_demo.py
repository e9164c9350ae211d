"""``seed_demo``: the demo world, idempotent.

Running it again changes nothing but the demo users' password and the operator's "demo" API key:
rows are looked up by their natural names and only created when missing (an operator's later edits
in the admin are kept). The password comes from ``DEMO_PASSWORD`` or is generated at random each
run; nothing secret is kept in the repository.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from tests_app.models import (
    Benchmark,
    BenchmarkEntry,
    Department,
    Eval,
    Membership,
    Rubric,
    Target,
)
from tests_app.services.api_keys import rotate_key
from tests_app.services.importing import message_problems
from tests_app.services.targets import reference_target

DEMO_KEY_NAME = "demo"
FRAME_WIDTH = 78
SYSTEM_SUPPORT = (
    "You are a customer-support agent for Northwind Outfitters, an online outdoor-gear shop. "
    "Refund policy: unworn items within 30 days get a full refund to the original payment method; "
    "opened electronics within 14 days get a refund minus a 10% restocking fee; sale items get "
    "store credit only. Refunds post 5-7 business days after the return is received."
)
SYSTEM_RESEARCH = (
    "You are a research assistant. Summaries must be faithful to the source, name the method, the "
    "data and the main quantitative result, and say what the authors do not claim."
)
SYSTEM_CODING = (
    "You are a senior Python engineer helping a colleague. Explain the cause before the fix, keep "
    "code minimal and runnable, and mention tests when a change could regress."
)


@dataclass(frozen=True)
class DemoUser:
    username: str
    first_name: str
    last_name: str
    staff: bool
    memberships: tuple[tuple[str, str], ...]  # (department name, role)
    description: str


DEPARTMENTS = (("Research", "research"), ("Support", "support"))

USERS = (
    DemoUser("admin", "Ada", "Admin", True, (), "staff and superuser: sees everything"),
    DemoUser(
        "operator", "Olive", "Operator", False, (("Research", "operator"),), "operator of Research"
    ),
    DemoUser("viewer", "Victor", "Viewer", False, (("Research", "viewer"),), "viewer of Research"),
    DemoUser(
        "outsider", "Oscar", "Outsider", False, (("Support", "operator"),), "operator of Support"
    ),
)

RUBRICS: tuple[dict[str, Any], ...] = (
    {
        "name": "Support quality",
        "description": (
            "A support answer is right about the policy, resolves the issue, and is kind."
        ),
        "criteria": [
            {
                "name": "policy accuracy",
                "description": "States the refund policy correctly.",
                "weight": 3,
            },
            {
                "name": "resolution",
                "description": "Moves the customer to a concrete next step.",
                "weight": 2,
            },
            {
                "name": "tone",
                "description": "Empathetic, clear, never blames the customer.",
                "weight": 1,
            },
        ],
        "pass_threshold": 0.7,
        "judge_instructions": (
            "Any wrong statement about refund amounts or deadlines fails policy accuracy."
        ),
    },
    {
        "name": "Summary fidelity",
        "description": "A research summary is faithful, covers the key results and is concise.",
        "criteria": [
            {
                "name": "faithfulness",
                "description": "No claim that the source does not make.",
                "weight": 3,
            },
            {
                "name": "coverage",
                "description": "Method, data and main result are present.",
                "weight": 2,
            },
            {
                "name": "concision",
                "description": "No padding; respects requested length.",
                "weight": 1,
            },
        ],
        "pass_threshold": 0.75,
        "judge_instructions": "Penalize invented numbers heavily, even when plausible.",
    },
    {
        "name": "Coding help",
        "description": "Coding answers are correct, explained and follow good practice.",
        "criteria": [
            {
                "name": "correctness",
                "description": "The code runs and fixes the problem.",
                "weight": 3,
            },
            {
                "name": "explanation",
                "description": "The cause is explained before the fix.",
                "weight": 1,
            },
            {
                "name": "practice",
                "description": "Idiomatic, safe, mentions tests where due.",
                "weight": 1,
            },
        ],
        "pass_threshold": 0.7,
        "judge_instructions": (
            "Run the code in your head; a fix that does not run fails correctness."
        ),
    },
)

EVALS: tuple[dict[str, str], ...] = (
    {
        "name": "Refund handling",
        "department": "Support",
        "rubric": "Support quality",
        "description": "Multi-turn customer conversations about returns and refunds.",
    },
    {
        "name": "Paper summarization",
        "department": "Research",
        "rubric": "Summary fidelity",
        "description": "Summarizing and questioning research abstracts over several turns.",
    },
    {
        "name": "Coding assistance",
        "department": "Research",
        "rubric": "Coding help",
        "description": "Debugging and improving Python code in a dialogue with a developer.",
    },
)


def _chat(system: str, *turns: tuple[str, str]) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}]
    for user, assistant in turns:
        messages.append({"role": "user", "content": user})
        messages.append({"role": "assistant", "content": assistant})
    return messages


BENCHMARKS: tuple[dict[str, Any], ...] = (
    {
        "name": "Refund conversations",
        "eval": "Refund handling",
        "entries": (
            (
                "Unworn jacket, inside 30 days",
                _chat(
                    SYSTEM_SUPPORT,
                    (
                        "Hi, I bought the Ridgeline rain jacket 12 days ago and it's too big. "
                        "I never wore it. Can I get my money back?",
                        "I'm sorry it didn't fit! Since it's unworn and within 30 days, you're "
                        "eligible for a full refund to your original payment method. Would you "
                        "like me to start the return?",
                    ),
                    (
                        "Yes please. Do I have to pay for shipping it back?",
                        "No, returns of unworn items are free: I'll email you a prepaid label. "
                        "Just pack the jacket with its tags attached and drop it at any carrier "
                        "location.",
                    ),
                    (
                        "Great. How long until I see the refund on my card?",
                        "Once the warehouse receives the jacket, the refund posts within 5-7 "
                        "business days. You'll get an email as soon as it's issued.",
                    ),
                ),
            ),
            (
                "Opened headlamp and a sale item",
                _chat(
                    SYSTEM_SUPPORT,
                    (
                        "I opened the Lumen 400 headlamp I got 10 days ago and I don't like it. "
                        "Refund?",
                        "You can return it: opened electronics within 14 days are refunded minus "
                        "a 10% restocking fee. The headlamp was $60, so you'd get $54 back.",
                    ),
                    (
                        "That's annoying. What about the hiking socks I got on sale in the same "
                        "order?",
                        "Sale items can be returned for store credit rather than a refund. I can "
                        "add the socks' price as credit to your account when they arrive.",
                    ),
                    (
                        "Fine, do both. And can you waive the restocking fee?",
                        "I understand the frustration. I'm not able to waive the fee, but I've "
                        "started both returns: $54 back to your card for the headlamp and store "
                        "credit for the socks. Labels are on their way to your email.",
                    ),
                ),
            ),
        ),
    },
    {
        "name": "Abstract summaries",
        "eval": "Paper summarization",
        "entries": (
            (
                "Sleep and memory consolidation study",
                _chat(
                    SYSTEM_RESEARCH,
                    (
                        "Summarize in two sentences: 'We recruited 64 adults who learned 40 "
                        "word pairs, then either slept or stayed awake for 8 hours. Recall was "
                        "tested after. The sleep group recalled 18% more pairs (p < 0.01). We did "
                        "not measure sleep stages.'",
                        "In a study of 64 adults, participants who slept for 8 hours after "
                        "learning 40 word pairs recalled 18% more pairs than those who stayed "
                        "awake (p < 0.01). Sleep stages were not measured, so the study cannot "
                        "say which stage drives the effect.",
                    ),
                    (
                        "Does this show that deep sleep improves memory?",
                        "No. It shows an effect of sleeping versus staying awake; without "
                        "sleep-stage data it cannot attribute the gain to deep sleep in "
                        "particular.",
                    ),
                    (
                        "What would be a good follow-up study?",
                        "Repeat the design with polysomnography to record sleep stages, and "
                        "correlate time in slow-wave and REM sleep with each person's recall "
                        "gain, ideally with a larger and more varied sample.",
                    ),
                ),
            ),
            (
                "Transformer pruning paper",
                _chat(
                    SYSTEM_RESEARCH,
                    (
                        "Summarize: 'We prune 40% of attention heads in a 350M-parameter model "
                        "using gradient-based importance scores. On three QA benchmarks accuracy "
                        "drops by at most 0.8 points while inference is 1.3x faster. We did not "
                        "test models larger than 350M.'",
                        "The authors remove 40% of attention heads from a 350M-parameter model "
                        "using gradient-based importance scores, losing at most 0.8 accuracy "
                        "points on three QA benchmarks while speeding inference up 1.3x. Larger "
                        "models were not tested.",
                    ),
                    (
                        "Would the same work for a 7B model?",
                        "The paper doesn't say: it only tested up to 350M parameters, so any "
                        "claim about 7B models would be an extrapolation beyond the evidence.",
                    ),
                    (
                        "Give me one limitation to mention in my literature review.",
                        "Its evidence is limited to a single 350M-parameter model and three QA "
                        "benchmarks, so neither scaling behaviour nor other task types are "
                        "established.",
                    ),
                ),
            ),
        ),
    },
    {
        "name": "Python debugging",
        "eval": "Coding assistance",
        "entries": (
            (
                "Mutable default argument",
                _chat(
                    SYSTEM_CODING,
                    (
                        "Why does this keep growing between calls?\n\n"
                        "def add_tag(tag, tags=[]):\n    tags.append(tag)\n    return tags",
                        "The default list is created once, when the function is defined, and "
                        "shared by every call that omits `tags`. Use None as the default:\n\n"
                        "def add_tag(tag, tags=None):\n    if tags is None:\n        tags = []\n"
                        "    tags.append(tag)\n    return tags",
                    ),
                    (
                        "Is there a linter rule that would have caught this?",
                        "Yes: ruff's B006 (from flake8-bugbear) flags mutable default arguments. "
                        "Enable the B rules and it will point at the original definition.",
                    ),
                    (
                        "How do I write a test so it doesn't come back?",
                        "Call it twice and check the calls are independent:\n\n"
                        "def test_add_tag_does_not_share_state():\n"
                        "    assert add_tag('a') == ['a']\n    assert add_tag('b') == ['b']",
                    ),
                ),
            ),
            (
                "Slow loop over a CSV",
                _chat(
                    SYSTEM_CODING,
                    (
                        "This takes minutes on a 200 MB CSV:\n\nrows = open('data.csv').read()"
                        ".split('\\n')\nfor r in rows:\n    if r.split(',')[2] == 'paid':\n"
                        "        total += float(r.split(',')[3])",
                        "It reads the whole file into memory and splits each row twice. Stream "
                        "it with the csv module instead:\n\nimport csv\ntotal = 0.0\n"
                        "with open('data.csv', newline='') as f:\n    for row in csv.reader(f):\n"
                        "        if row[2] == 'paid':\n            total += float(row[3])",
                    ),
                    (
                        "The first line is a header and it crashes on float().",
                        "Skip the header with `next(reader)` before the loop, or use "
                        "csv.DictReader and refer to columns by name, e.g. row['status'] and "
                        "row['amount'].",
                    ),
                    (
                        "Would pandas be faster?",
                        "For a one-off sum, pandas with usecols=['status', 'amount'] is usually "
                        "faster because parsing happens in C, but it loads the columns into "
                        "memory; the csv loop keeps memory flat. Measure both on your file.",
                    ),
                ),
            ),
        ),
    },
)


# The local model's demo (docs/local-model.md): the same conversations as "Abstract summaries",
# replayed against SmolLM2-135M on the server that `make run` starts, through the target
# LOCAL_TARGET_NAME of the eval's department.
LOCAL_TARGET_NAME = "SmolLM2-135M (local demo)"
LOCAL_BENCHMARK_NAME = "Abstract summaries on SmolLM2-135M (local demo)"
LOCAL_BENCHMARK_EVAL = "Paper summarization"
LOCAL_BENCHMARK_ENTRIES_FROM = "Abstract summaries"


def local_model_target(*, department: Department) -> Target:
    """SmolLM2-135M on loopback, greedy and seeded so that a replay can be repeated; its answers
    are bounded, since a small model may repeat itself until the context is full. Where the
    server listens follows the settings on every seed; an operator's other edits are kept."""
    where = {
        "kind": Target.Kind.OPENAI,
        "model": settings.LOCAL_MODEL_NAME,
        "base_url": settings.LOCAL_MODEL_BASE_URL,
    }
    target, _ = Target.objects.update_or_create(
        department=department,
        name=LOCAL_TARGET_NAME,
        defaults=where,
        create_defaults={**where, "seed": 7, "temperature": 0, "max_tokens": 256},
    )
    return target


def seed_local_model_benchmark() -> Benchmark | None:
    """The demo benchmark of the local model, where it is installed and not turned off."""
    if not settings.LOCAL_MODEL_ENABLED:
        return None
    [spec] = [spec for spec in BENCHMARKS if spec["name"] == LOCAL_BENCHMARK_ENTRIES_FROM]
    evaluation = Eval.objects.get(name=LOCAL_BENCHMARK_EVAL)
    target = local_model_target(department=evaluation.department)
    benchmark, _ = Benchmark.objects.get_or_create(
        name=LOCAL_BENCHMARK_NAME, eval=evaluation, defaults={"default_target": target}
    )
    for position, (title, messages) in enumerate(spec["entries"], start=1):
        BenchmarkEntry.objects.get_or_create(
            benchmark=benchmark, position=position, defaults={"title": title, "messages": messages}
        )
    return benchmark


class Command(BaseCommand):
    help = "Load the demo data (idempotent) and print the logins and a fresh demo API key."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--base-url",
            default="http://127.0.0.1:8000",
            help="Where the server listens, for the printed links and curl example.",
        )
        parser.add_argument(
            "--allow-production",
            action="store_true",
            help="Seed even in production mode (it creates a superuser named admin).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if getattr(settings, "PRODUCTION", False) and not options["allow_production"]:
            raise CommandError(
                "Refusing to seed demo users in production mode; pass --allow-production."
            )
        for benchmark in BENCHMARKS:
            for title, messages in benchmark["entries"]:
                problems = message_problems(messages)
                if problems:
                    raise CommandError(f"Demo entry {title!r} is invalid: {'; '.join(problems)}")

        password = os.environ.get("DEMO_PASSWORD", "").strip() or secrets.token_urlsafe(12)
        with transaction.atomic():
            departments = self._departments()
            self._catalog(departments)
            seed_local_model_benchmark()
            users = self._users(departments, password)
            _, raw_key, revoked = rotate_key(user=users["operator"], name=DEMO_KEY_NAME)
        self._report(options["base_url"].rstrip("/"), password, raw_key, revoked)

    def _departments(self) -> dict[str, Department]:
        departments = {}
        for name, slug in DEPARTMENTS:
            departments[name], _ = Department.objects.get_or_create(
                name=name, defaults={"slug": slug}
            )
        return departments

    def _catalog(self, departments: dict[str, Department]) -> None:
        rubrics = {}
        for spec in RUBRICS:
            defaults = {key: value for key, value in spec.items() if key != "name"}
            rubrics[spec["name"]], _ = Rubric.objects.get_or_create(
                name=spec["name"], defaults=defaults
            )
        evals = {}
        for spec in EVALS:
            evals[spec["name"]], _ = Eval.objects.get_or_create(
                name=spec["name"],
                department=departments[spec["department"]],
                defaults={"rubric": rubrics[spec["rubric"]], "description": spec["description"]},
            )
        for spec in BENCHMARKS:
            evaluation = evals[spec["eval"]]
            benchmark, _ = Benchmark.objects.get_or_create(
                name=spec["name"],
                eval=evaluation,
                defaults={"default_target": reference_target(department=evaluation.department)},
            )
            for position, (title, messages) in enumerate(spec["entries"], start=1):
                BenchmarkEntry.objects.get_or_create(
                    benchmark=benchmark,
                    position=position,
                    defaults={"title": title, "messages": messages},
                )

    def _users(self, departments: dict[str, Department], password: str) -> dict[str, Any]:
        user_model = get_user_model()
        users = {}
        for spec in USERS:
            user, _ = user_model._default_manager.get_or_create(
                username=spec.username,
                defaults={
                    "first_name": spec.first_name,
                    "last_name": spec.last_name,
                    "email": f"{spec.username}@example.com",
                },
            )
            user.is_staff = spec.staff
            user.is_superuser = spec.staff
            user.is_active = True
            user.set_password(password)
            user.save(update_fields=["is_staff", "is_superuser", "is_active", "password"])
            wanted = {departments[name].pk: role for name, role in spec.memberships}
            # The demo users' roles are the point of the demo: put back exactly the documented ones.
            Membership.objects.filter(user=user).exclude(department_id__in=wanted).delete()
            for department_id, role in wanted.items():
                membership, created = Membership.objects.get_or_create(
                    user=user, department_id=department_id, defaults={"role": role}
                )
                if not created and membership.role != role:
                    membership.role = role
                    membership.save(update_fields=["role", "updated_at"])
            users[spec.username] = user
        return users

    def _report(self, base_url: str, password: str, raw_key: str, revoked: int) -> None:
        source = (
            "from DEMO_PASSWORD"
            if os.environ.get("DEMO_PASSWORD", "").strip()
            else "random each run; set DEMO_PASSWORD to choose one"
        )
        lines = [
            self.style.SUCCESS(
                f"Demo data ready: {Department.objects.count()} departments, "
                f"{Eval.objects.count()} evals, {Benchmark.objects.count()} benchmarks, "
                f"{BenchmarkEntry.objects.count()} entries."
            ),
            f"Log in at {base_url}/admin/ (staff) and {base_url}/tests/ (pages):",
            *(f"  {spec.username:<9} {spec.description}" for spec in USERS),
            f"  password for all of them ({source}): {password}",
            "API key of operator (shown once"
            + ("; the previous demo key was revoked" if revoked else "")
            + f"): {raw_key}",
            f"  curl -s -X POST {base_url}/api/v5/artifacts/test/search "
            f"-H 'X-Api-Key: {raw_key}' -H 'Content-Type: application/json' -d '{{}}'",
            "AI grades: "
            + (
                f"the LLM judge {settings.JUDGE_MODEL}"
                + (" (the local model)" if settings.JUDGE_IS_LOCAL_MODEL else "")
                if settings.JUDGE_MODEL
                else "the offline reference comparison (no JUDGE_MODEL; not an AI)"
            ),
        ]
        # Framed, so that the password and the key stand out from the install and server output
        # around them (``make run`` prints this block last, right before serving).
        frame = "=" * FRAME_WIDTH
        self.stdout.write("\n".join([frame, *lines, frame]))
