"""WSGI entry point: plain HTTP (API, admin, pages) for a multi-process WSGI server.

Under ASGI, Django runs every synchronous view on one thread per process, so one daphne process
answers one API call at a time. In production the HTTP routes can go to a WSGI server with several
worker processes and threads (the README's Performance section measures granian against daphne),
while daphne keeps the websockets (``/ws/``) through ``config.asgi``. Static files are served by the
app itself here too (WhiteNoise), as under ASGI.
"""

import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()

# What start-up loaded (Django, the app, the URL conf) lives as long as the process: freeze it, so
# that the collector never walks it again, and let the young generation grow past what one large
# answer allocates before a collection.
gc.collect()
gc.freeze()
gc.set_threshold(10_000, *gc.get_threshold()[1:])
