"""``python -m wsgi_observe``."""

import sys

from .cli import main

sys.exit(main())
