"""The served processes' log lines (``appleconnect.logformat``): records without caller, thread
and process (``lean_log_records``) print the same lines; the SMTP server's chatter is left out.

Logging's configuration is global, so each check runs in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = r"""
import json, logging, sys
from appleconnect.logformat import JsonFormatter, TextFormatter, lean_log_records

class Keep(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []
    def emit(self, record):
        self.records.append(record)

def lines():
    keep = Keep()
    log = logging.getLogger("probe")
    log.handlers[:] = [keep]
    log.propagate = False
    log.warning("hello %s", "world")
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("failed")
    out = []
    for record in keep.records:
        record.created, record.msecs = 0.0, 0.0
        out.append([TextFormatter().format(record), JsonFormatter().format(record)])
    r = keep.records[0]
    return out, [r.process, r.thread, r.processName, r.pathname, r.lineno]

before, fields_before = lines()
lean_log_records()
after, fields_after = lines()
print(json.dumps({"before": before, "after": after, "fields_before": fields_before,
                  "fields_after": fields_after}))
"""


def test_lines_are_unchanged_and_the_unprinted_fields_are_not_filled() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    seen = json.loads(done.stdout)
    assert seen["after"] == seen["before"]
    assert "hello world" in seen["after"][0][0]
    assert "ZeroDivisionError" in seen["after"][1][0]  # tracebacks are still printed
    process, thread, _name, pathname, lineno = seen["fields_before"]
    assert process is not None
    assert thread is not None
    assert pathname == "<string>"
    assert lineno > 0
    assert seen["fields_after"] == [None, None, None, "(unknown file)", 0]


def test_the_smtp_servers_chatter_is_left_out_and_its_warnings_kept() -> None:
    probe = (
        "import logging, logging.config\n"
        "from appleconnect.logformat import log_config\n"
        "logging.config.dictConfig(log_config())\n"
        "logging.getLogger('mail.log').info('Peer: 127.0.0.1')\n"
        "logging.getLogger('mail.log').warning('SMTP session exception')\n"
        "logging.getLogger('uvicorn.error').info('Started server process')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert "Peer: 127.0.0.1" not in done.stderr
    assert "WARNING mail.log [-] SMTP session exception" in done.stderr
    assert "INFO uvicorn.error [-] Started server process" in done.stderr
