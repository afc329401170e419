"""The JSON-lines point log: the file that survives a crashed or interrupted sweep. Torch-free.

Each run appends a header line `{"run": ID, "meta": {...}}` (what machine_info.pruned_perf holds in
the results JSON, less the session's outcome, which only the end knows) before its first point, then
one line per finished point: `{"run": ID, "nodeid": ..., <the point's fields>}`. An A/B run also logs
every pair of rounds as it is measured, before its point: `{"run": ID, "nodeid": ..., "ab_pair": {...},
"point": ID}` (pruned_perf.core.ab_schema.Pair), and each point's A/B once it ends, measured or not:
`{"run": ID, "nodeid": ..., "ab_point": {...}}` (pruned_perf.analysis.ab.ABPoint). Each line is flushed
and synced at once, so a crash loses no finished point or pair; a last line cut short is skipped on
reading.
"""
from __future__ import annotations

import json
import os
from pathlib import Path


class PointLog:
    def __init__(self, path: str | Path, run: str, meta: dict | None = None):
        self.path, self.run, self.meta = Path(path), run, meta
        self._header_written = meta is None

    def append(self, measurement, nodeid: str) -> None:
        """Log one finished point (a Measurement, or anything with `to_dict`)."""
        self._header()
        self._write({"run": self.run, "nodeid": nodeid, **measurement.to_dict()})

    def append_pair(self, pair, point_id: str, nodeid: str) -> None:
        """Log one finished A/B pair of rounds (an ab_schema.Pair) of point `point_id`."""
        self._header()
        self._write({"run": self.run, "nodeid": nodeid, "point": point_id, "ab_pair": pair.to_dict()})

    def append_ab_point(self, record, nodeid: str) -> None:
        """Log one point's A/B (an analysis.ab.ABPoint), measured or not."""
        self._header()
        self._write({"run": self.run, "nodeid": nodeid, "ab_point": record.to_dict()})

    def _header(self) -> None:
        if not self._header_written:
            self._write({"run": self.run, "meta": self.meta})
            self._header_written = True

    def _write(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)  # at the first point, not when a run is set up
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())


def read_records(path: str | Path) -> list[dict]:
    """Every whole line of a log (headers and points) in order; a line cut short by a crash is skipped."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def is_point(record: dict) -> bool:
    """A point's line: not a run's header, nor an A/B pair or point."""
    return not {"meta", "ab_pair", "ab_point"} & set(record)


def read_log(path: str | Path) -> list[dict]:
    """The points of a log, of every run in it, in order."""
    return [r for r in read_records(path) if is_point(r)]


def read_pairs(path: str | Path) -> list[dict]:
    """The A/B pairs of a log, of every run in it, in the order they were measured."""
    return [r for r in read_records(path) if "ab_pair" in r]
