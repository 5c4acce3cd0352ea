"""Settings: one app (this package), SQLite, mail printed to the console.

difo needs no setting here: the web process and `difo server` both read REDIS_URL (or
DIFO_URL) from the environment, so one environment serves both.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]

INSTALLED_APPS = ["myproject"]
# No sessions or cookies here, hence no CSRF middleware; a site with logins keeps Django's
# default MIDDLEWARE list.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "myproject.urls"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        # example.db, not db.sqlite3: the repository's .gitignore covers *.db
        "NAME": os.environ.get("DJANGO_SQLITE_PATH", BASE_DIR / "example.db"),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True

EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = "hello@example.com"
