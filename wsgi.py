"""WSGI entry point: gunicorn -c deploy/gunicorn.conf.py wsgi:app"""

import sys

from config import ConfigError

try:
    from app import create_app

    app = create_app()
except ConfigError as exc:
    # One clear line instead of a traceback, then a non-zero exit.
    print(f"configuration error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None
