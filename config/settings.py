"""One settings module, driven by the environment.

Two runtimes (DESIGN §7):

* **embedded** (no environment set): SQLite in ``data/``, local-memory cache, in-memory channel
  layer, background work on an in-process thread after commit. Meant for ``make run`` and demos.
* **production** (``REPLAYBENCH_MODE=production``): PostgreSQL through psycopg 3 (``DATABASE_URL``),
  Redis for the cache, the channel layer and Celery (``REDIS_URL``), a real ``SECRET_KEY`` and
  ``ALLOWED_HOSTS``. A missing or malformed required setting stops the process at start with a
  message that names it.

``DATABASE_URL`` and ``REDIS_URL`` also work on their own outside production mode: the test suite
uses them to run against real PostgreSQL and Redis. ``DEBUG`` is off in both runtimes unless
``DEBUG=1`` asks for Django's debug pages.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import dj_database_url
import orjson
from django.core.exceptions import ImproperlyConfigured

from tests_app import local_model

BASE_DIR = Path(__file__).resolve().parent.parent


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def _env_bool(name: str, default: bool) -> bool:
    raw = _env(name)
    if not raw:
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), got {raw!r}")


def _env_int(name: str, default: int) -> int:
    raw = _env(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as error:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from error


def _env_list(name: str, default: list[str]) -> list[str]:
    raw = _env(name)
    if not raw:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


RUNTIME_MODE = _env("REPLAYBENCH_MODE", "embedded").lower()
if RUNTIME_MODE not in {"embedded", "production"}:
    raise ImproperlyConfigured(
        f"REPLAYBENCH_MODE must be 'embedded' or 'production', got {RUNTIME_MODE!r}"
    )
PRODUCTION = RUNTIME_MODE == "production"

DATABASE_URL = _env("DATABASE_URL")
REDIS_URL = _env("REDIS_URL")

if PRODUCTION:
    _missing = [
        name
        for name in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL", "ALLOWED_HOSTS")
        if not _env(name)
    ]
    if _missing:
        raise ImproperlyConfigured(
            "Production mode (REPLAYBENCH_MODE=production) needs these environment variables: "
            + ", ".join(_missing)
        )
    if len(_env("SECRET_KEY")) < 50:
        raise ImproperlyConfigured("SECRET_KEY must be at least 50 characters long in production")
    if _env("SECRET_KEY").startswith("django-insecure-"):
        # The embedded key is public (it is in this file): sessions signed with it can be forged.
        raise ImproperlyConfigured(
            "SECRET_KEY is the embedded demo key or another django-insecure- key; production needs "
            "a secret of its own, e.g. from secrets.token_urlsafe(50)"
        )
    if not DATABASE_URL.startswith(("postgres://", "postgresql://")):
        raise ImproperlyConfigured("DATABASE_URL must be a postgres:// URL in production")

if REDIS_URL:
    _redis = urlparse(REDIS_URL)
    if _redis.scheme not in {"redis", "rediss"} or not _redis.hostname:
        raise ImproperlyConfigured(
            f"REDIS_URL must look like redis://host:6379/0, got {REDIS_URL!r}"
        )

# The embedded key is only for a local demo; production refuses to start with it, and its prefix
# makes Django's own `check --deploy` flag it (security.W009) wherever it is used.
EMBEDDED_SECRET_KEY = "django-insecure-replaybench-embedded-demo-key-0123456789abcdefghijklmn"  # noqa: S105
SECRET_KEY = _env("SECRET_KEY") or EMBEDDED_SECRET_KEY
# Off unless asked for (DEBUG=1): the debug pages list every URL pattern and show tracebacks.
DEBUG = _env_bool("DEBUG", default=False)
ALLOWED_HOSTS = _env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver", "[::1]"])
CSRF_TRUSTED_ORIGINS = _env_list(
    "CSRF_TRUSTED_ORIGINS", ["http://127.0.0.1:8000", "http://localhost:8000"]
)

INSTALLED_APPS = [
    "daphne",
    # Django's admin, on a site that also lets department operators in (tests_app/admin_site.py).
    "tests_app.apps.AdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    "csp",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "tests_app",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "tests_app.outages.ServiceUnavailableMiddleware",
    # Above WhiteNoise, so that static files get the same security headers as pages.
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "tests_app.pages.context.navigation",
            ],
        },
    },
]

# --- database -------------------------------------------------------------------------------
DATA_DIR = Path(_env("REPLAYBENCH_DATA_DIR") or BASE_DIR / "data")

if DATABASE_URL:
    try:
        _database = dj_database_url.parse(DATABASE_URL, conn_max_age=0, conn_health_checks=True)
    except ValueError as error:
        raise ImproperlyConfigured(f"DATABASE_URL is malformed: {error}") from error
    if _database["ENGINE"] == "django.db.backends.postgresql":
        # Parameters bound by the server, and psycopg prepares a statement once a connection has
        # run it a few times (Django turns that off unless asked): the hot ones (next's claim,
        # run's mark, a replay's steps) are planned once per connection, not at every call.
        # Behind a transaction-pooling PgBouncer older than 1.21, set prepare_threshold to None.
        _database.setdefault("OPTIONS", {}).update(
            {"server_side_binding": True, "prepare_threshold": 5}
        )
    # psycopg 3's pool: one per process, so web and worker processes scale out independently.
    # Production only: the test suite creates and drops databases, which a pool would hold open.
    if _database["ENGINE"] == "django.db.backends.postgresql" and PRODUCTION:
        # The pool checks a connection as it hands it out and replaces a broken one, so the
        # first call after PostgreSQL restarted, or after its connections were terminated, works.
        # Workers turn this off (config/celery.py): they retry instead.
        _database["CONN_HEALTH_CHECKS"] = True
        _database.setdefault("OPTIONS", {})["pool"] = {
            "min_size": 1,
            "max_size": _env_int("DATABASE_POOL_MAX", 20),
            "timeout": 10,
        }
    DATABASES = {"default": _database}
else:
    DATA_DIR.mkdir(parents=True, exist_ok=True)  # a fresh clone has no data folder yet
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(DATA_DIR / "replaybench.sqlite3"),
            # A request thread and the in-process replay thread write at once: WAL lets readers
            # go on, IMMEDIATE takes the write lock up front (no upgrade deadlock), and the busy
            # timeout makes a writer wait instead of failing with "database is locked".
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": (
                    "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;"
                ),
            },
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- cache, channel layer, background work ---------------------------------------------------
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "replaybench",
            "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
        }
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": "replaybench"},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    # Replays run on a thread here and publish from it: the layer must wake the server's loop.
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "tests_app.realtime.layers.ThreadSafeInMemoryChannelLayer"}
    }

# A cache that cannot reach Redis answers as if empty (and logs it): the API key authentication
# then reads PostgreSQL, and calls that need only PostgreSQL keep working while Redis is down.
DJANGO_REDIS_IGNORE_EXCEPTIONS = True
DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True

# API key authentication keeps a key's row, user and memberships in the cache this long (seconds);
# only with a shared cache, so that a revoke in any process reaches every web process at once.
API_KEY_CACHE_SECONDS = 30 if REDIS_URL else 0

# "celery" hands work to Celery workers on Redis; "thread" runs it in this process on a thread
# after commit (the embedded default, where no broker exists); the test suite also uses "sync".
BACKGROUND_BACKEND = "celery" if REDIS_URL else "thread"
BACKGROUND_THREADS = 8

# The slowest replay we allow: many turns against a slow model. The soft limit lets the task
# record the failure; the hard limit kills it.
REPLAY_SOFT_TIME_LIMIT = 1800
REPLAY_TIME_LIMIT = REPLAY_SOFT_TIME_LIMIT + 60
# A running invocation whose heartbeat is older than this lost its worker, and a target slot
# whose lease is this old is free again.
REPLAY_HEARTBEAT_TIMEOUT = _env_int("REPLAY_HEARTBEAT_TIMEOUT", 60)
# An invocation whose replay was requested this long ago and has not started (its task was lost
# with a worker or with Redis) is enqueued again.
REPLAY_START_TIMEOUT = 60
REPLAY_MAX_ATTEMPTS = 3
REAPER_INTERVAL_S = 15
# An active run-all not ticked this long is ticked by the sweep (a worker died before ticking it).
RUN_ALL_STALL_TIMEOUT = 60
ANALYTICS_REFRESH_INTERVAL_S = 300
# Concurrent model calls allowed per target (model + base_url) across all workers; 0: no cap.
TARGET_MAX_CONCURRENCY = _env_int("TARGET_MAX_CONCURRENCY", 32)

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = REPLAY_SOFT_TIME_LIMIT
CELERY_TASK_TIME_LIMIT = REPLAY_TIME_LIMIT
# A message leaves Redis as a worker takes it: the sweep, not a redelivery, gives back what a
# dead worker held (tests_app.services.sweep), so kombu's emulated acknowledgements (two Redis
# writes per task, and a redelivery long after the sweep) would buy nothing.
CELERY_BROKER_TRANSPORT_OPTIONS = {"ack_emulation": False}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE = {
    "sweep-stranded-work": {
        "task": "tests_app.tasks.sweep_stranded_work",
        "schedule": float(REAPER_INTERVAL_S),
    },
    "refresh-analytics": {
        "task": "tests_app.tasks.refresh_analytics",
        "schedule": float(ANALYTICS_REFRESH_INTERVAL_S),
    },
}

# --- the local model (docs/local-model.md) ---------------------------------------------------
# SmolLM2-135M served by llama.cpp's server on loopback (manage.py serve_local_model, started by
# make run). Optional: without its packages, or with LOCAL_MODEL=off, nothing uses it.
LOCAL_MODEL_INSTALLED = local_model.installed()
LOCAL_MODEL_ENABLED = _env_bool("LOCAL_MODEL", default=True) and LOCAL_MODEL_INSTALLED
LOCAL_MODEL_NAME = local_model.MODEL_NAME
LOCAL_MODEL_PORT = _env_int("LOCAL_MODEL_PORT", 8089)
LOCAL_MODEL_BASE_URL = local_model.base_url(LOCAL_MODEL_PORT)
# One thread: on a small machine shared with the web and worker processes, more were slower.
LOCAL_MODEL_THREADS = _env_int("LOCAL_MODEL_THREADS", 1)
# Requests answered at once, each with the model's whole context: a judge's request does not
# wait behind the replays' turns for a free slot.
LOCAL_MODEL_SLOTS = 4
LOCAL_MODEL_CONTEXT_TOKENS = local_model.CONTEXT_TOKENS

# --- the AI judge -----------------------------------------------------------------------------
# With no JUDGE_MODEL the offline reference grader is used (and says so in every grade). The
# embedded default (no DATABASE_URL, REDIS_URL or production mode) is judged by the local model
# when it is installed, so that a grade asked for in `make run` comes from a real LLM; JUDGE_MODEL
# or JUDGE_BASE_URL in the environment win, and LOCAL_MODEL=off keeps the offline grader.
EMBEDDED_DEFAULT = not PRODUCTION and not DATABASE_URL and not REDIS_URL
JUDGE_IS_LOCAL_MODEL = (
    EMBEDDED_DEFAULT and LOCAL_MODEL_ENABLED and not (_env("JUDGE_MODEL") or _env("JUDGE_BASE_URL"))
)
JUDGE_MODEL = LOCAL_MODEL_NAME if JUDGE_IS_LOCAL_MODEL else _env("JUDGE_MODEL")
JUDGE_BASE_URL = LOCAL_MODEL_BASE_URL if JUDGE_IS_LOCAL_MODEL else _env("JUDGE_BASE_URL")
JUDGE_API_KEY_ENV = _env("JUDGE_API_KEY_ENV", "JUDGE_API_KEY")
JUDGE_TEMPERATURE = 0.0
JUDGE_SEED = 7
# The local model reads a long prompt at about a hundred tokens a second on one thread.
JUDGE_TIMEOUT_S = 300 if JUDGE_MODEL == LOCAL_MODEL_NAME else 60
JUDGE_MAX_ATTEMPTS = 3
# The judge model's context in tokens: its request is fitted into it (docs/judges.md). The local
# model's is known; a larger model's context is larger than this default, which errs short.
JUDGE_CONTEXT_TOKENS = _env_int(
    "JUDGE_CONTEXT_TOKENS",
    LOCAL_MODEL_CONTEXT_TOKENS if JUDGE_MODEL == LOCAL_MODEL_NAME else 32_768,
)
# Kept for the judge's answer (its max_tokens): a few sentences per criterion.
JUDGE_ANSWER_TOKENS = 768
# A grade still pending this long after its judge last started is given to another worker: longer
# than every attempt of a judge that keeps timing out.
GRADE_TIMEOUT = max(600, JUDGE_TIMEOUT_S * (JUDGE_MAX_ATTEMPTS + 1))

# --- auth, REST, OpenAPI ----------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/tests/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

API_KEY_CUSTOM_HEADER = "HTTP_X_API_KEY"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tests_app.api.authentication.ApiKeyAuthentication",
        "tests_app.api.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["tests_app.api.permissions.IsAuthenticated"],
    # orjson writes UUIDs and datetimes itself (UTC as "Z", as DRF's fields render them), so the
    # large answers of get and search need no pass that turns them into strings first.
    "DEFAULT_RENDERER_CLASSES": ["drf_orjson_renderer.renderers.ORJSONRenderer"],
    "ORJSON_RENDERER_OPTIONS": (orjson.OPT_UTC_Z, orjson.OPT_NON_STR_KEYS),
    # orjson refuses what a strict JSON API should (NaN, invalid UTF-8, integers beyond 64 bits,
    # nesting beyond 1024 levels) with a parse error; the json module recurses until it crashes.
    "DEFAULT_PARSER_CLASSES": ["drf_orjson_renderer.parsers.ORJSONParser"],
    "EXCEPTION_HANDLER": "tests_app.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_CLASSES": ["tests_app.api.throttling.CallerRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "caller": _env("API_THROTTLE_RATE", "6000/min"),
        # Calls without valid credentials per client address (tests_app.api.throttling).
        "failed_authentication": "60/min",
    },
    # Client addresses come from REMOTE_ADDR, or from X-Forwarded-For behind this many proxies:
    # unset, DRF would trust any X-Forwarded-For a client invents, and so any throttle.
    "NUM_PROXIES": _env_int("NUM_PROXIES", 0),
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "replaybench API",
    "DESCRIPTION": "Run benchmark tests that replay recorded conversations against models.",
    "VERSION": "5.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "tests_app.api.schema.refuse_unknown_fields",
    ],
}

# --- i18n, static, storage --------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = (
    [BASE_DIR / "tests_app" / "static_src"]
    if (BASE_DIR / "tests_app" / "static_src").exists()
    else []
)
MEDIA_ROOT = DATA_DIR / "media"
MEDIA_URL = "/media/"
# WhiteNoise serves static files with or without DEBUG, straight from the apps and packages that
# ship them, under both servers (daphne and granian): no collectstatic step, so no STATIC_ROOT.
WHITENOISE_USE_FINDERS = True
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# --- security ---------------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # the pages' scripts read it to call the API with CSRF
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
# Everything is served from this origin: no inline script or style, no CDN, no framing. The
# websocket of a test page is 'self' too. Redoc's search runs in a worker made from a blob: URL
# and Swagger UI draws some icons as data: images (docs/security.md).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "worker-src": ["'self'", "blob:"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
if PRODUCTION:
    SECURE_SSL_REDIRECT = _env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = 31536000
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

# --- logging: never log secrets (API keys are hashed before they reach a log or the database) ---
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": _env("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # One INFO line per model call ("HTTP Request: POST ...") from the model client.
        "httpx": {"level": "WARNING"},
    },
}

# API pages, limits
GET_RUNS_PAGE_SIZE = 100
GET_RUNS_PAGE_SIZE_MAX = 500
