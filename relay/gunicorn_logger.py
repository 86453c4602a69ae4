"""gunicorn's own error log, with the values of URL query strings masked.

gunicorn logs a request it cannot parse with its request line: `Invalid request from
ip=...: Invalid HTTP request line: 'POST /hooks/gumroad?token=... HTTP/1.1'`. A route
verified by a query token (Gumroad, Jotform, SamCart, PayPal IPN...) would put its
secret there, outside the relay's own log redaction (relay/logs.py).
"""

from __future__ import annotations

import logging
import re

from gunicorn.glogging import Logger

_QUERY_VALUE = re.compile(r"([?&][^=&\s'\"]*=)[^&\s'\"]*")


class _MaskQueryValues(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = _QUERY_VALUE.sub(r"\1***", record.getMessage())
        record.args = ()
        return True


class QueryMaskingLogger(Logger):
    def setup(self, cfg) -> None:
        super().setup(cfg)
        if not any(isinstance(f, _MaskQueryValues) for f in self.error_log.filters):
            self.error_log.addFilter(_MaskQueryValues())
