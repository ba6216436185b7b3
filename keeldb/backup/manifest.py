"""The archive's manifest: the one object that says which archived objects exist.

This module owns the manifest's form (JSON under `MANIFEST_KEY`) and the rules read from
it: which snapshot a restore to an instant starts from, which segments follow it, the
window of instants that can be restored. An archived object becomes part of the archive
only when a manifest naming it is published, and a manifest only ever names objects that
were uploaded, read back and compared; so a crash mid-upload leaves an unnamed object
(garbage, ignored), never a half-visible one.

It never does IO (the archiver and the restore read and write the manifest's bytes).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

MANIFEST_KEY = "archive/manifest.json"
MANIFEST_VERSION = 1
SEGMENTS_PREFIX = "archive/wal/"
SNAPSHOTS_PREFIX = "archive/snapshots/"


class ArchiveGapError(Exception):
    """The archive lacks log records needed to reach an instant (archiving was stopped)."""


@dataclass(frozen=True, slots=True)
class SegmentEntry:
    """One sealed log segment: records first_lsn..last_lsn, committed in
    [first_time_us, last_time_us]."""

    key: str
    sha256: str
    bytes: int
    first_lsn: int
    last_lsn: int
    first_time_us: int
    last_time_us: int


@dataclass(frozen=True, slots=True)
class SnapshotEntry:
    """A copy of the node's store holding the effect of records 1..lsn exactly; every one of
    those records was committed at or before `time_us`."""

    key: str
    sha256: str
    bytes: int
    lsn: int
    time_us: int


@dataclass(slots=True)
class Manifest:
    segments: list[SegmentEntry] = field(default_factory=list)
    snapshots: list[SnapshotEntry] = field(default_factory=list)
    # Extra objects kept with the archive (the keyring of wrapped data keys, when data is
    # encrypted at rest): name -> {"key": ..., "sha256": ...}.
    extras: dict[str, dict[str, str]] = field(default_factory=dict)

    def archived_lsn(self) -> int:
        """The end of the chain of archived segments (the newest snapshot's LSN while there
        is no segment): the next segment to archive holds the record after it."""
        if self.segments:
            return self.segments[-1].last_lsn
        if self.snapshots:
            return self.snapshots[-1].lsn
        return 0

    def archived_time_us(self) -> int:
        """The commit time of the newest archived record (0 for an empty archive)."""
        times = [0]
        if self.segments:
            times.append(self.segments[-1].last_time_us)
        if self.snapshots:
            times.append(self.snapshots[-1].time_us)
        return max(times)

    def earliest_time_us(self) -> int | None:
        """The first instant a restore can reach: the oldest snapshot's time."""
        if not self.snapshots:
            return None
        return self.snapshots[0].time_us

    def snapshot_for(self, time_us: int) -> SnapshotEntry | None:
        """The newest snapshot whose records were all committed at or before `time_us`."""
        best = None
        for snapshot in self.snapshots:
            if snapshot.time_us <= time_us:
                best = snapshot
        return best

    def segments_after(self, lsn: int, time_us: int) -> list[SegmentEntry]:
        """The segments holding records lsn+1 onward, up to the first record committed after
        `time_us`, in order; ArchiveGapError if records are missing between them."""
        chosen = []
        expected = lsn + 1
        for segment in self.segments:
            if segment.last_lsn < expected:
                continue
            if segment.first_time_us > time_us:
                break
            if segment.first_lsn > expected:
                raise ArchiveGapError(
                    f"the archive lacks log records {expected}..{segment.first_lsn - 1}"
                )
            chosen.append(segment)
            expected = segment.last_lsn + 1
        return chosen

    def prune(self, cutoff_us: int) -> list[str]:
        """Forget what no restore to an instant at or after `cutoff_us` needs: every snapshot
        older than the newest one taken at or before the cutoff, and the segments wholly
        below that snapshot. Returns the keys of the objects forgotten (to delete once a
        manifest without them is published)."""
        keep = self.snapshot_for(cutoff_us)
        if keep is None:
            return []
        dropped = [s.key for s in self.snapshots if s.lsn < keep.lsn]
        dropped += [s.key for s in self.segments if s.last_lsn <= keep.lsn]
        self.snapshots = [s for s in self.snapshots if s.lsn >= keep.lsn]
        self.segments = [s for s in self.segments if s.last_lsn > keep.lsn]
        return dropped

    def to_json(self) -> bytes:
        body = {
            "version": MANIFEST_VERSION,
            "segments": [asdict(s) for s in self.segments],
            "snapshots": [asdict(s) for s in self.snapshots],
            "extras": self.extras,
        }
        return json.dumps(body, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        body: dict[str, Any] = json.loads(data)
        if body.get("version") != MANIFEST_VERSION:
            raise ValueError(f"unknown archive manifest version {body.get('version')!r}")
        return cls(
            segments=[SegmentEntry(**s) for s in body["segments"]],
            snapshots=[SnapshotEntry(**s) for s in body["snapshots"]],
            extras=dict(body.get("extras", {})),
        )


def segment_key(first_lsn: int, last_lsn: int) -> str:
    return f"{SEGMENTS_PREFIX}{first_lsn:020d}-{last_lsn:020d}.wal"


def snapshot_key(lsn: int, time_us: int) -> str:
    return f"{SNAPSHOTS_PREFIX}{lsn:020d}-{time_us:020d}.mdb"
