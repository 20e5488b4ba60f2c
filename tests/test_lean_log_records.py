"""``logformat.lean_log_records``: records without caller, thread and process, lines unchanged.

The switches are global, so each check runs in a fresh interpreter."""

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
