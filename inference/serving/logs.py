"""What the service logs: one line per failed request, secrets never.

`RedactingFilter` rewrites every record of the service's and uvicorn's loggers before it
is formatted out: the configured secret values (the bearer key, the upstream key) become
``***``, as do ``user:pw@`` in URLs (`data_tools.config.redact_url`) and the value of an
``Authorization`` / ``api_key`` mention.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from data_tools.config import redact_url

_AUTH = re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?(?:bearer\s+)?)([^\s\"',}]+)")
_KEYS = re.compile(r"(?i)((?:api[_-]?key|token|password)[\"']?\s*[:=]\s*[\"']?)([^\s\"',}]+)")

LOGGERS = ("inference.serve", "uvicorn", "uvicorn.error", "uvicorn.access")


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    text = _AUTH.sub(r"\1***", text)
    text = _KEYS.sub(r"\1***", text)
    return redact_url(text)


class RedactingFilter(logging.Filter):
    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__()
        self.secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str | None]) -> None:
        self.secrets = sorted({*self.secrets, *(s for s in secrets if s)}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not lose the record
            message = str(record.msg)
        record.msg = redact_text(message, self.secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text, self.secrets)
        return True


def install_redaction(secrets: Iterable[str | None]) -> None:
    """Redact `secrets` (and URL userinfo, bearer tokens) in the service's and uvicorn's
    loggers and in the root logger's handlers; a second call adds its secrets."""
    secrets = list(secrets)
    targets: list[logging.Filterer] = [logging.getLogger(name) for name in LOGGERS]
    targets += logging.getLogger().handlers
    for target in targets:
        existing = next((f for f in target.filters if isinstance(f, RedactingFilter)), None)
        if existing is None:
            target.addFilter(RedactingFilter(secrets))
        else:
            existing.add(secrets)
