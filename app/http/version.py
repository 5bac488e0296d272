"""GET /api/widget-version: the build manifest's version against the caller's."""

from __future__ import annotations

import json
import logging
import re
import threading

from flask import Blueprint, current_app, jsonify, request

from app.errors import ApiError
from app.http import cors

bp = Blueprint("version", __name__, url_prefix="/api")
log = logging.getLogger(__name__)
# ASCII digits, whole string (fullmatch): `\d` and `$` would let "\u0663" and "1.0\n" in.
VERSION = re.compile(
    r"v?([0-9]{1,4})(?:\.([0-9]{1,4}))?(?:\.([0-9]{1,4}))?(?:[-+][0-9A-Za-z.-]{1,20})?"
)


class ManifestVersion:
    """The manifest's version, re-read only when the file changes (a deploy rebuilds it)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._seen: tuple[float, str] | None = None

    def get(self, path) -> str:
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return ""
        with self._lock:
            if self._seen and self._seen[0] == mtime:
                return self._seen[1]
            try:
                version = str(json.loads(path.read_text())["version"])
            except (OSError, ValueError, KeyError, TypeError):
                log.warning("widget manifest %s is unreadable", path)
                version = ""
            self._seen = (mtime, version)
            return version


manifest_version = ManifestVersion()


def _parts(version: str) -> tuple[int, ...] | None:
    match = VERSION.fullmatch(version or "")
    return tuple(int(p or 0) for p in match.groups()) if match else None


def widget_version(settings, current: str | None) -> dict:
    current = current or None  # an empty ?v= is no version at all
    if current is not None and _parts(current) is None:
        raise ApiError(400, "invalid_request", "v must be a version such as 1.0.0")
    latest = settings.widget_latest_version or manifest_version.get(settings.widget_manifest)
    newer = bool(current and latest and _parts(latest) and _parts(latest) > _parts(current))
    return {
        "current": current,
        "latest": latest or None,
        "update_available": newer,
        "changelog": settings.widget_changelog_url or None,
    }


@bp.get("/widget-version")
@cors.public
def widget_version_route():
    response = jsonify(widget_version(current_app.config["SETTINGS"], request.args.get("v")))
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
