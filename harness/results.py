"""Results records: one JSON file per framework run.

``results/<framework>-<version>-<device>-<dtype>.json`` contains the run facts
and one entry per test case. Files are written to a temporary file in the
same folder and renamed over the target, so a reader sees the whole file or
the previous one, never a partial write.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path

SCHEMA_VERSION = 1
OUTCOMES = ("passed", "failed", "deviation", "unsupported", "not_run")


def results_filename(framework, version, device, dtype):
    """Return the file name of a run's results record."""
    device = device.replace(":", "")
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", f"{framework}-{version}-{device}-{dtype}") + ".json"


def _finite_or_none(value):
    # JSON has no inf or NaN: store them as strings a reader can parse back.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def clean_json(value):
    """Return ``value`` with every infinite or NaN float replaced by its string."""
    if isinstance(value, dict):
        return {key: clean_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(item) for item in value]
    return _finite_or_none(value)


def write_atomic(path, text):
    """Write ``text`` (str, or bytes for binary files) to ``path`` whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    mode = {"mode": "wb"} if isinstance(text, bytes) else {"mode": "w", "encoding": "utf-8"}
    try:
        with os.fdopen(handle, **mode) as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_record(path, run, cases):
    """Write a results record with the run facts and the case entries."""
    for case in cases:
        if case["outcome"] not in OUTCOMES:
            raise ValueError(f"invalid outcome {case['outcome']!r} for {case['nodeid']}: expected one of {OUTCOMES}")
    document = {"schema": SCHEMA_VERSION, "run": run, "cases": cases}
    write_atomic(path, json.dumps(clean_json(document), indent=1, sort_keys=True, allow_nan=False) + "\n")
