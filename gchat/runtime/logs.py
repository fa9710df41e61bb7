"""Log set-up: readable lines for a terminal, or one JSON object per line.

``GCHAT_LOG_FORMAT=json`` (``log_format`` in the configuration) is for log
shippers (journald, Loki, Elasticsearch): every record becomes one JSON
object with a UTC timestamp, level, logger, node and message, plus the
traceback as one string when there is one, so a multi-line traceback never
splits into several records. The messages themselves are the same in both
formats; like every log line they carry ids and counts, never plaintext,
keys or tokens.
"""

import json
import logging
from datetime import UTC, datetime

from gchat.runtime.quietlog import QuietFilter

FORMATS = ("text", "json")
_TEXT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record (keys: ts, level, logger, node, msg, exc)."""

    def __init__(self, node_id: str = "") -> None:
        super().__init__()
        self._node = node_id

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "node": self._node,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(log_format: str = "text", node_id: str = "", level: int = logging.INFO) -> None:
    """Send the process's logs to stderr in ``log_format`` (``text`` or ``json``)."""
    if log_format not in FORMATS:
        raise ValueError(f"log_format must be one of {', '.join(FORMATS)}, not {log_format!r}")
    handler = logging.StreamHandler()
    json_lines = log_format == "json"
    handler.setFormatter(JsonFormatter(node_id) if json_lines else logging.Formatter(_TEXT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Two INFO lines per connection from websockets (we log our own, with ids).
    logging.getLogger("websockets.server").setLevel(logging.WARNING)
    # asyncpg logs a traceback a second while PostgreSQL is down: one line
    # per interval instead, like ours (gchat.runtime.quietlog).
    pool_log = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, QuietFilter) for f in pool_log.filters):
        pool_log.addFilter(QuietFilter())
