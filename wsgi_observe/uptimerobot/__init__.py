"""UptimeRobot: API clients, the plan of monitors, and the ``uptimerobot setup`` command.

- :mod:`.client_v3`: :class:`UptimeRobotV3Client` for API v3 (cursor paging, retries, a
  Bearer key that never shows); :mod:`.schema_v3` holds API v3's names and enums, and
  where the sources about them disagree;
- :mod:`.client_v2`: :class:`UptimeRobotClient` for API v2, which UptimeRobot keeps running
  but no longer updates. It is what ``wsgi_observe.UptimeRobotClient`` names, unchanged, so
  the guide's code keeps working; ``UptimeRobotV2Client`` is the same class;
- :mod:`.plan`: which monitors should exist (the same for both APIs), pure;
- :mod:`.accounts`: an account read and written through either API, and
  :func:`setup_monitors`;
- :mod:`.command`: ``wsgi-observe uptimerobot setup [--dry-run] [--api v2|v3]``.
"""

from __future__ import annotations

from ._wire import UptimeRobotError
from .accounts import setup_monitors
from .client_v2 import UptimeRobotClient
from .client_v3 import UptimeRobotV3Client

UptimeRobotV2Client = UptimeRobotClient

__all__ = [
    "UptimeRobotClient",
    "UptimeRobotError",
    "UptimeRobotV2Client",
    "UptimeRobotV3Client",
    "setup_monitors",
]
