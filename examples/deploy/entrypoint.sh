#!/bin/sh
# A container's entry point: prepare, then become minigun. `exec` replaces this shell, so
# minigun is PID 1: the container runtime's TERM (docker stop, kubectl delete) reaches the
# master itself, which stops gracefully, and orphaned processes are reparented to minigun, which
# reaps them. Without `exec` the shell would be PID 1, would not pass TERM on, and the runtime
# would SIGKILL everything after its grace period.
# Book: appendix D, "In a container". Exercised by tests/deploy.rs.
#   entrypoint.sh myapp.wsgi:application [more minigun flags]
set -eu
cd "${APP_DIR:-/srv/myapp}"
# One-off preparation goes here, before the exec (migrations, collectstatic, ...).
exec minigun --config "${MINIGUN_CONFIG:-/etc/minigun/minigun.conf.py}" \
    --bind "0.0.0.0:${PORT:-8000}" "$@"
