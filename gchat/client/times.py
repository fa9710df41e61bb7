"""Times as people type them: ``2026-11-01``, ``2026-11-01T08:00``, ``24h``, ``yesterday``.

Why: auditors ask "what happened since yesterday" or "in the last 24 hours";
the wire wants epoch milliseconds. Dates without a zone are this machine's
local time (an auditor in Bangkok means Bangkok's midnight).
"""

import re
from datetime import datetime, timedelta

from gchat.client.cli_errors import UserError
from protocol import frames as f

_RELATIVE = re.compile(r"^(\d+)\s*(m|min|h|d|w)$")
_UNITS = {"m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, *, now: datetime | None = None) -> int:
    """Epoch milliseconds for ``text``; a UserError saying what is accepted."""
    now = now or datetime.now().astimezone()
    value = text.strip().lower()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if value == "now":
        moment = now
    elif value == "today":
        moment = midnight
    elif value == "yesterday":
        moment = midnight - timedelta(days=1)
    elif match := _RELATIVE.match(value):
        moment = now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    else:
        try:
            moment = datetime.fromisoformat(text.strip())
        except ValueError:
            raise UserError(
                f"{text!r} is not a time: use a date (2026-11-01), a date and time "
                "(2026-11-01T08:00, local unless it has a zone), an age (30m, 24h, 7d, 2w), "
                "today or yesterday"
            ) from None
        if moment.tzinfo is None:
            moment = moment.astimezone()  # local time
    return f.wire_time(moment)
