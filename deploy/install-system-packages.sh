#!/usr/bin/env bash
# Installs the Debian packages the project needs, only those missing.
# Usage: install-system-packages.sh [run|test|bench|server|build|venv]
set -euo pipefail
want_for() {
  case "$1" in
    run) echo "redis-server:redis-server nginx:nginx" ;;
    test) echo "redis-server:redis-server redis-sentinel:redis-sentinel nginx:nginx chromium:chromium systemd-analyze:systemd promtool:prometheus" ;;
    bench) echo "redis-server:redis-server nginx:nginx wrk:wrk chromium:chromium" ;;
    server) echo "redis-server:redis-server nginx:nginx" ;;
    build) echo "npm:npm" ;;
    venv) echo "" ;;  # checked below: Debian's python3 needs python3-venv for `-m venv`
    *) echo "unknown profile: $1" >&2; exit 2 ;;
  esac
}
missing=()
for pair in $(want_for "${1:-test}"); do
  binary=${pair%%:*} package=${pair##*:}
  if ! command -v "$binary" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$binary" ] && [ ! -x "/usr/bin/$binary" ]; then
    missing+=("$package")
  fi
done
if [ "${1:-test}" = venv ] && ! "${PYTHON:-python3}" -c 'import ensurepip' 2>/dev/null; then
  missing+=("python3-venv")
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "Missing system packages: ${missing[*]}" >&2
  echo "Install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "Installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
