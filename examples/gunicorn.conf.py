# gunicorn.conf.py: your own gunicorn settings plus wsgi_observe's multi-worker hooks.
#   gunicorn -c examples/gunicorn.conf.py "myproject.wsgi:application"
import os

from wsgi_observe.gunicorn import child_exit, on_exit, on_starting, post_fork  # noqa: F401

bind = os.environ.get("BIND", "0.0.0.0:5000")
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
max_requests = 1000  # recycled workers keep their counts: they move into the archive
max_requests_jitter = 100
timeout = 30
# Where the workers' state files live (default: a fresh folder in the temp directory).
# os.environ.setdefault("WSGI_OBSERVE_STATE_DIR", "/run/wsgi_observe")
