"""Run one endpoint in a fresh process and report its time and peak memory (VmHWM).

``python -m bench.probe export <test_id>`` with DATABASE_URL, REDIS_URL, MEDIA_ROOT and
BENCH_API_KEY in the environment prints one JSON line: seconds, the answer, the resident memory
before the call and the peak after it. The call goes through the real view and service with the
in-process test client, so the process measured is the one doing the export, and nothing else
it did before (serving other scenarios) inflates its peak. The peak is the kernel's high-water mark
of this process's memory, not ``ru_maxrss``: Linux carries ``ru_maxrss`` over ``exec`` from the
process that spawned it, so the probe would report the bench harness's size.
"""

from __future__ import annotations

import json
import os
import sys
import time


def resident_mb(field: str = "VmRSS") -> float:
    """This process's resident memory in MB (``VmHWM``: its peak so far)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    endpoint, test_id = sys.argv[1], sys.argv[2]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.test import Client

    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
    client = Client(headers={"X-Api-Key": os.environ["BENCH_API_KEY"]})
    path = f"/api/v5/artifacts/test/{endpoint}"
    # A warm-up call on an unknown id loads the URL conf, the views and the serializers.
    client.post(
        path,
        data=json.dumps({"test_id": "00000000-0000-0000-0000-000000000000"}),
        content_type="application/json",
    )
    before_mb = resident_mb()
    started = time.perf_counter()
    response = client.post(
        path, data=json.dumps({"test_id": test_id}), content_type="application/json"
    )
    seconds = time.perf_counter() - started
    peak_mb = resident_mb("VmHWM")
    try:
        answer = response.json()
    except ValueError:
        answer = {"raw": response.content[:500].decode(errors="replace")}
    print(
        json.dumps(
            {
                "status": response.status_code,
                "seconds": seconds,
                "answer": answer,
                "before_mb": before_mb,
                "peak_mb": peak_mb,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
