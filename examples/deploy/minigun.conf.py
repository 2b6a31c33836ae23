# /etc/minigun/minigun.conf.py: minigun's settings for myapp (gunicorn's names and meanings).
# Book: appendix D. Used by minigun.service and entrypoint.sh, and by tests/deploy.rs.
import os

# Under systemd the socket comes from minigun.socket and this line is not used; started any
# other way, minigun binds it itself.
bind = ["unix:/run/minigun.sock"]

# One process per core runs Python code in parallel; threads overlap the time requests spend
# waiting on databases and APIs. Appendix D, "Sizing", has the measurements behind this.
workers = os.cpu_count() or 1
threads = 4

# A request running longer than this gets its worker killed and replaced.
timeout = 30
# How long TERM and HUP let requests in flight finish (TimeoutStopSec in minigun.service is
# a little longer).
graceful_timeout = 30
# Longer than nginx keeps an idle upstream connection (keepalive_timeout 4s in nginx.conf), so
# minigun never closes a connection nginx is about to reuse.
keepalive = 5

accesslog = "-"
errorlog = "-"
