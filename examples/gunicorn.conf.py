# gunicorn.conf.py: your own gunicorn settings plus wsgi_observe's hooks (a configuration
# checked before forking, a state directory made before the workers, exited workers folded
# in at once). Workers share exact numbers without them too.
#   gunicorn -c examples/gunicorn.conf.py "myproject.wsgi:application"
import os

from wsgi_observe.gunicorn import (  # noqa: F401
    child_exit,
    on_exit,
    on_starting,
    post_worker_init,
)

bind = os.environ.get("BIND", "0.0.0.0:5000")
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
max_requests = 1000  # recycled workers keep their counts: they move into the archive
max_requests_jitter = 100
timeout = 30
# Where the workers' state files live (default: a fresh private folder in the temp
# directory). A directory you choose must be private to the server's user (chmod 700).
# os.environ.setdefault("WSGI_OBSERVE_STATE_DIR", "/var/lib/crm-api/metrics")
