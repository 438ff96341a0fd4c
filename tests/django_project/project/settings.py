"""Settings of the test project: one database set over the cluster of ``PGROUTER_DSN``.

``default`` and ``default-1``, ``default-2``... are the set's hosts
(:func:`pgrouter.django.database_set`); ``direct`` is a plain alias to the
first host, in no set, which the delegate router sends ``shop.Note`` to
(pgrouter leaves its queries alone).
"""

import os

import pgrouter.django
from pgrouter.dsn import split_dsn

DSN = os.environ.get("PGROUTER_DSN", "postgresql://postgres@127.0.0.1:5432,127.0.0.1:5433/postgres")

SECRET_KEY = "pgrouter-tests-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost"]
USE_TZ = True
ROOT_URLCONF = "project.urls"
INSTALLED_APPS = ["shop"]
MIDDLEWARE = ["pgrouter.django.middleware.PinningMiddleware"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

_first = split_dsn(DSN)[0]
DATABASES = {
    **pgrouter.django.database_set("default", DSN, CONN_MAX_AGE=60),
    "direct": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _first.dbname or "",
        "USER": _first.user or "",
        "PASSWORD": _first.password or "",
        "HOST": _first.host,
        "PORT": str(_first.port),
    },
}
DATABASE_ROUTERS = [os.environ.get("PGROUTER_TEST_ROUTER", "pgrouter.django.GreedyRouter")]
PGROUTER_DELEGATE_ROUTERS = ["shop.routers.NotesRouter"]
# Checks often, so a replica's replayed position is seen soon (tests wait on it).
PGROUTER_REFRESH_DELAY = 0.2
PGROUTER_PINNING_SECONDS = 15
