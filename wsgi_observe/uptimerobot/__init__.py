"""UptimeRobot: an API client, the plan of monitors, and the ``uptimerobot setup`` command.

- :mod:`.client`: :class:`UptimeRobotClient` for API v2 (paging, retries, a masked key);
- :mod:`.plan`: the guide's monitors and how to make each exist exactly once;
- :mod:`.command`: ``wsgi-observe uptimerobot setup [--dry-run]``.
"""

from __future__ import annotations

from .client import UptimeRobotClient, UptimeRobotError

__all__ = ["UptimeRobotClient", "UptimeRobotError"]
