"""The node's write-ahead log: append-only segment files of checksummed, numbered records.

This module owns the on-disk log format (see docs/storage.md), the fsync points of the log,
the detection and removal of a torn tail after a crash, and the removal of whole segments
below a checkpoint. It never interprets the payloads it stores, never decides when a
checkpoint is safe (the caller does, after making the store durable), and never retries a
failed fsync.

Layout of a log directory::

    00000000000000000001.wal    one segment, named by the LSN of its first record
    00000000000000081234.wal    ...

A segment starts with a header, then holds records back to back::

    segment header  magic "KEELWAL1" or "KEELWAL2" (8) | first lsn u64 | salt u64 |
                    crc32 of those 24 bytes
    record          length u32 | crc32 u32 | lsn u64 | payload (length bytes)

In a "KEELWAL2" segment (a log opened with `commit_times=True`) every payload starts with
the record's commit time, u64 microseconds since the epoch, before the caller's bytes: all
records of one group share the time the group was written, and times never decrease in LSN
order (point-in-time restore replays records committed at or before an instant). The time is
inside the checksummed payload, so it is as durable and as verified as the record itself.

All integers are little-endian. A record's crc32 covers its segment's salt (random, chosen
when the segment is created), its length, its lsn and its payload, so a record that was
moved, cut short or overwritten does not verify, and neither do bytes that merely look like
a record (a client's stored data, a removed segment's old blocks). LSNs are consecutive
across the whole log, starting at 1.

After a crash the last segment may end with a torn record (the process died or the power
failed while writing it): opening the log finds the first record that does not verify,
checks that no valid record follows it (if one does, acknowledged data is damaged and the
log refuses to open with `CorruptLogError`), then cuts the file back to the last good
record. A torn record was never synced, so it was never acknowledged, and it is never
applied.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import struct
import sys
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SEGMENT_BYTES = 64 * 1024 * 1024  # A segment is closed once the next record would cross this.
RECORD_BYTES_MAX = 16 * 1024 * 1024  # Payload limit: a transaction of 100 items of 400 KB
# with before and after images fits in 80 MB, but DynamoDB caps a transaction at 4 MB of
# request data, so 16 MiB leaves room for the images and refuses runaway records.
PREALLOCATE_BYTES = 1024 * 1024  # With preallocation, how far past the last record a
# segment is zeroed at a time, at most: each step costs one fdatasync that also commits the
# file's metadata, amortised over about 800 records of 1.3 KB.
PREALLOCATE_FIRST_BYTES = 64 * 1024  # ... and at first: a step zeroes as much as the segment
# already holds, so that a segment sealed after a few records (the archive seals every few
# seconds) has not had a whole PREALLOCATE_BYTES of zeroes written for it.
ZERO_WRITE_BYTES = 4096  # Zeroes are written a page per call: a larger write leaves one
# large page-cache folio, and the kernel then counts the whole folio as written (in the
# process's write_bytes) at every fdatasync of a record inside it, though the disk gets only
# the changed blocks; page-sized writes keep that count true to the disk's.
_ZEROES = bytes(ZERO_WRITE_BYTES)
TAIL_SEARCH_LSNS = 64  # After a bad record, how many following LSNs are looked for to tell
# a torn tail (nothing valid follows) from damage in the middle (a valid record follows).

SEGMENT_MAGIC = b"KEELWAL1"
SEGMENT_MAGIC_TIMED = b"KEELWAL2"  # records carry their commit time (see the docstring)
COMMIT_TIME = struct.Struct("<Q")  # microseconds since the epoch, first in a timed payload
COMMIT_TIME_BYTES = COMMIT_TIME.size
SEGMENT_HEADER = struct.Struct("<8sQQI")  # magic, first lsn, salt, crc32 of the 24 before
SEGMENT_HEADER_BYTES = SEGMENT_HEADER.size
RECORD_HEADER = struct.Struct("<IIQ")  # payload length, crc32, lsn
RECORD_HEADER_BYTES = RECORD_HEADER.size
_CRC_FIELDS = struct.Struct("<QIQ")  # covered by a record's crc: segment salt, length, lsn
_SEGMENT_FIELDS = struct.Struct("<8sQQ")  # covered by a segment header's crc
_LSN = struct.Struct("<Q")
SEGMENT_NAME_PATTERN = re.compile(r"^(\d{20})\.wal$")
LOCK_FILE_NAME = "LOCK"


class CorruptLogError(Exception):
    """The log holds damaged data that may have been acknowledged: an operating error.

    Raised instead of skipping the damage, so that no acknowledged write is silently lost;
    the node must stop and be repaired (from a replica, or by an operator's decision).
    """


class FsyncFailedError(Exception):
    """An fsync of the log failed: the process must stop (see `WriteAheadLog.sync`)."""


class LogInUseError(Exception):
    """Another process (or another open log in this one) is writing to the log directory."""


class RecordTooLargeError(ValueError):
    """A payload larger than RECORD_BYTES_MAX was offered to the log."""


FsyncFn = Callable[[int], None]
WriteFn = Callable[[int, memoryview], int]  # os.write's shape: returns the bytes written


def _default_fsync(fd: int) -> None:
    # fdatasync also writes the file size, which is all an append needs; macOS lacks it.
    if sys.platform == "linux":
        os.fdatasync(fd)
    else:
        os.fsync(fd)


def record_crc(salt: int, length: int, lsn: int, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(_CRC_FIELDS.pack(salt, length, lsn)))


def encode_record(lsn: int, payload: bytes, salt: int) -> bytes:
    """One framed record, as it is written to the segment whose header holds `salt`."""
    length = len(payload)
    return RECORD_HEADER.pack(length, record_crc(salt, length, lsn, payload), lsn) + payload


def encode_segment_header(first_lsn: int, salt: int, *, timed: bool = False) -> bytes:
    magic = SEGMENT_MAGIC_TIMED if timed else SEGMENT_MAGIC
    fields = _SEGMENT_FIELDS.pack(magic, first_lsn, salt)
    return fields + struct.pack("<I", zlib.crc32(fields))


def segment_name(first_lsn: int) -> str:
    return f"{first_lsn:020d}.wal"


def decode_segment_header(data: bytes | memoryview) -> tuple[int, int] | None:
    """The first LSN and the salt the header announces, or None if it does not verify."""
    header = decode_segment_header_full(data)
    if header is None:
        return None
    return header[0], header[1]


def decode_segment_header_full(data: bytes | memoryview) -> tuple[int, int, bool] | None:
    """The first LSN, the salt and whether records carry commit times; None if the header
    does not verify."""
    if len(data) < SEGMENT_HEADER_BYTES:
        return None
    magic: bytes
    first_lsn: int
    salt: int
    crc: int
    magic, first_lsn, salt, crc = SEGMENT_HEADER.unpack_from(data, 0)
    if magic not in (SEGMENT_MAGIC, SEGMENT_MAGIC_TIMED):
        return None
    if crc != zlib.crc32(memoryview(data)[: _SEGMENT_FIELDS.size]):
        return None
    return first_lsn, salt, magic == SEGMENT_MAGIC_TIMED


def read_segment(data: bytes, first_lsn: int | None = None) -> Iterator[tuple[int, int, bytes]]:
    """Every record of a whole, sealed segment as (lsn, commit time in microseconds, payload),
    each checksum verified; the time is 0 in a segment without commit times.

    For segments read back from an archive: a sealed segment was fsynced whole before the next
    one was created, so anything that does not verify, up to its last byte, is damage and
    raises CorruptLogError.
    """
    header = decode_segment_header_full(data)
    if header is None:
        raise CorruptLogError("segment header does not verify")
    header_lsn, salt, timed = header
    if first_lsn is not None and header_lsn != first_lsn:
        raise CorruptLogError(f"segment header says first LSN {header_lsn}, not {first_lsn}")
    offset = SEGMENT_HEADER_BYTES
    lsn = header_lsn
    while offset < len(data):
        end = record_end(data, offset, lsn, salt)
        if end is None:
            raise CorruptLogError(f"record {lsn} at byte {offset} does not verify")
        start = offset + RECORD_HEADER_BYTES
        if timed:
            (time_us,) = COMMIT_TIME.unpack_from(data, start)
            yield lsn, time_us, data[start + COMMIT_TIME_BYTES : end]
        else:
            yield lsn, 0, data[start:end]
        offset = end
        lsn += 1


@dataclass(frozen=True, slots=True)
class SegmentSummary:
    """What a verified, sealed segment holds: its LSN range and the commit times of its
    first and last records (0 in a segment without commit times)."""

    first_lsn: int
    last_lsn: int  # first_lsn - 1 when the segment holds no record
    first_time_us: int
    last_time_us: int

    @property
    def records(self) -> int:
        return self.last_lsn - self.first_lsn + 1


def verify_segment(data: bytes, first_lsn: int | None = None) -> SegmentSummary:
    """Check every record of a whole, sealed segment, as `read_segment` does (same checks,
    same CorruptLogError), without handing out the records: one tight loop with no copy of
    a payload, for a caller that needs only the LSN range and the commit times."""
    header = decode_segment_header_full(data)
    if header is None:
        raise CorruptLogError("segment header does not verify")
    header_lsn, salt, timed = header
    if first_lsn is not None and header_lsn != first_lsn:
        raise CorruptLogError(f"segment header says first LSN {header_lsn}, not {first_lsn}")
    view = memoryview(data)
    size = len(data)
    unpack_header = RECORD_HEADER.unpack_from
    pack_fields = _CRC_FIELDS.pack
    crc32 = zlib.crc32
    length_max = RECORD_BYTES_MAX + COMMIT_TIME_BYTES
    offset = SEGMENT_HEADER_BYTES
    lsn = header_lsn
    last_start = -1
    while offset < size:
        start = offset + RECORD_HEADER_BYTES
        if start > size:
            raise CorruptLogError(f"record {lsn} at byte {offset} does not verify")
        length, crc, found_lsn = unpack_header(data, offset)
        end = start + length
        if (
            found_lsn != lsn
            or length > length_max
            or end > size
            or crc32(view[start:end], crc32(pack_fields(salt, length, lsn))) != crc
        ):
            raise CorruptLogError(f"record {lsn} at byte {offset} does not verify")
        last_start = start
        offset = end
        lsn += 1
    first_time_us = last_time_us = 0
    if timed and last_start >= 0:
        (first_time_us,) = COMMIT_TIME.unpack_from(data, SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES)
        (last_time_us,) = COMMIT_TIME.unpack_from(data, last_start)
    return SegmentSummary(header_lsn, lsn - 1, first_time_us, last_time_us)


def record_end(data: bytes | memoryview, offset: int, lsn: int, salt: int) -> int | None:
    """The end offset of a valid record with this LSN starting at `offset`, else None."""
    if offset + RECORD_HEADER_BYTES > len(data):
        return None
    length: int
    crc: int
    found_lsn: int
    length, crc, found_lsn = RECORD_HEADER.unpack_from(data, offset)
    if found_lsn != lsn or length > RECORD_BYTES_MAX + COMMIT_TIME_BYTES:
        return None
    end = offset + RECORD_HEADER_BYTES + length
    if end > len(data):
        return None
    payload = memoryview(data)[offset + RECORD_HEADER_BYTES : end]
    if record_crc(salt, length, lsn, payload) != crc:
        return None
    return end


def _valid_record_after(data: bytes, offset: int, expected_lsn: int, salt: int) -> int | None:
    """The LSN of a valid record somewhere after a bad one at `offset`, if there is one.

    The bad record's length field cannot be trusted, so candidates are found by looking for
    the encoding of each of the next few LSNs and checking the record that would surround it.
    The segment's random salt is in every record's crc, so bytes a client stored that frame a
    record (a decoy in a torn payload) never verify: only the log writes valid records.
    """
    if _all_zero(data, offset):
        return None  # a zeroed tail (its size reached the disk, its data did not)
    lsn_offset = 8  # where the lsn sits inside a record header
    for lsn in range(expected_lsn, expected_lsn + TAIL_SEARCH_LSNS):
        needle = _LSN.pack(lsn)
        position = data.find(needle, offset + 1 + lsn_offset)
        while position != -1:
            if record_end(data, position - lsn_offset, lsn, salt) is not None:
                return lsn
            position = data.find(needle, position + 1)
    return None


def _all_zero(data: bytes, offset: int) -> bool:
    return data.count(0, offset) == len(data) - offset


def make_directory_durable(path: Path, fsync: FsyncFn = os.fsync) -> None:
    """Create `path` (and missing parents) so that the new directories survive power loss.

    A directory's entry lives in its parent: each directory created is made durable by an
    fsync of its parent, top-down. An existing directory is left alone.
    """
    missing: list[Path] = []
    current = Path(path)
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            continue
        fsync_directory(directory.parent, fsync)


def _lock_directory(path: Path) -> int:
    """Hold an exclusive lock on the log directory for as long as the log is open.

    Two writers appending to the same segments would interleave records and damage the log;
    the lock (released by the kernel when the process dies, kill -9 included) refuses the
    second one.
    """
    fd = os.open(path / LOCK_FILE_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LogInUseError(f"{path} is in use by another process") from None
    return fd


def fsync_directory(path: Path, fsync: FsyncFn = os.fsync) -> None:
    """Make a file's creation, removal or renaming in `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fsync(fd)
    finally:
        os.close(fd)


class WriteAheadLog:
    """An append-only log of opaque payloads in segment files; one writer, one thread at a time.

    `append` only writes (the data reaches the OS page cache, which survives kill -9 but not
    power loss); `sync` makes everything appended so far durable. A caller acknowledges a
    record only after a `sync` that followed its `append`.
    """

    def __init__(
        self,
        directory: Path,
        *,
        start_lsn: int = 0,
        segment_bytes: int = SEGMENT_BYTES,
        fsync: FsyncFn = _default_fsync,
        write: WriteFn = os.write,
        commit_times: bool = False,
        preallocate_bytes: int = 0,
    ) -> None:
        """Open (or create) the log in `directory`, cutting off a torn tail.

        With `commit_times`, segments created from now on carry each record's commit time
        (segments written before keep their format and are read as they are).

        `start_lsn` is the LSN the log continues from when the directory holds no segment
        (a new node, or a store restored from a snapshot): its first record gets
        `start_lsn + 1`. It is ignored when segments exist. `fsync` and `write` are the
        disk's system calls, replaceable by tests that make the disk fail.

        `preallocate_bytes` (0: off) zeroes the segment being written that far ahead of
        its last record, so that the fdatasync of a group finds the blocks allocated and the
        file's size unchanged and writes the data alone, without a commit of the
        filesystem's journal (measured -25 % per fdatasync on ext4, docs/performance.md).
        The zeroes are never taken for records: the tail after the last record that
        verifies is cut off when the log is opened (a zeroed tail is not damage), and a
        segment is cut to its last record before it is sealed and at close.
        """
        assert segment_bytes > SEGMENT_HEADER_BYTES
        assert preallocate_bytes >= 0, preallocate_bytes
        self._preallocate_bytes = preallocate_bytes
        self._zeroed_end = 0  # with preallocation: where the zeroes ahead of the records end
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self._fsync = fsync
        self._write_fn = write
        self._commit_times = commit_times
        self._timed = commit_times  # whether the segment being written carries times
        self._last_time_us = 0  # the commit time of the last record appended (0: unknown)
        self._next_time_us = 0  # the commit time `append` gives (see `set_commit_time`)
        self._failed = False
        self._fd = -1
        self._lock_fd = -1
        make_directory_durable(self.directory, fsync)
        self._lock_fd = _lock_directory(self.directory)
        try:
            self._segments = self._list_segments()  # first LSNs, ascending
            if not self._segments:
                self._create_segment(start_lsn + 1)
            self._open_last_segment()
        except BaseException:
            self.close()
            raise

    # --- opening -------------------------------------------------------------------------

    def _list_segments(self) -> list[int]:
        found = []
        for entry in os.listdir(self.directory):
            match = SEGMENT_NAME_PATTERN.match(entry)
            if match is not None:
                found.append(int(match.group(1)))
        return sorted(found)

    def _path(self, first_lsn: int) -> Path:
        return self.directory / segment_name(first_lsn)

    def _create_segment(self, first_lsn: int) -> int:
        """Create a segment, durable with its header before any record goes into it.

        Returns the segment's salt.
        """
        path = self._path(first_lsn)
        salt = int.from_bytes(os.urandom(8), "little")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            header = encode_segment_header(first_lsn, salt, timed=self._commit_times)
            _write_all(fd, header, self._write_fn)
            self._sync_fd(fd)
        finally:
            os.close(fd)
        self._sync_directory()
        if not self._segments or self._segments[-1] != first_lsn:
            self._segments.append(first_lsn)
        return salt

    def _open_last_segment(self) -> None:
        first_lsn = self._segments[-1]
        path = self._path(first_lsn)
        data = path.read_bytes()
        header = decode_segment_header_full(data)
        if header is None:
            if len(data) <= SEGMENT_HEADER_BYTES:
                # The segment was being created when the node stopped: its header was never
                # synced, so no record was ever written after it. Create it again.
                log.warning("recreating torn segment header of %s", path)
                self._create_segment(first_lsn)
                data = path.read_bytes()
                header = decode_segment_header_full(data)
                assert header is not None
            else:
                raise CorruptLogError(f"{path}: segment header does not verify")
        header_lsn, salt, timed = header
        if header_lsn != first_lsn:
            raise CorruptLogError(f"{path}: header says first LSN {header_lsn}")
        offset = SEGMENT_HEADER_BYTES
        lsn = first_lsn
        last_time_us = 0
        while True:
            end = record_end(data, offset, lsn, salt)
            if end is None:
                break
            if timed:
                (last_time_us,) = COMMIT_TIME.unpack_from(data, offset + RECORD_HEADER_BYTES)
            offset = end
            lsn += 1
        if lsn == first_lsn and len(self._segments) > 1:
            last_time_us = self._last_time_in(self._segments[-2])
        if offset < len(data):
            later = _valid_record_after(data, offset, lsn, salt)
            if later is not None:
                raise CorruptLogError(
                    f"{path}: record {lsn} at byte {offset} does not verify, "
                    f"but a valid record {later} follows it"
                )
            if self._preallocate_bytes and _all_zero(data, offset):
                # What a preallocating log leaves after a crash: not a torn record.
                log.info(
                    "%s: cutting %d zeroed bytes after record %d", path, len(data) - offset, lsn - 1
                )
            else:
                log.warning(
                    "%s: discarding a torn tail of %d bytes after record %d",
                    path,
                    len(data) - offset,
                    lsn - 1,
                )
        self._fd = self._open_for_append(path)
        if offset < len(data):
            os.ftruncate(self._fd, offset)
        if self._preallocate_bytes:
            os.lseek(self._fd, offset, os.SEEK_SET)
            self._zeroed_end = offset
        # Sync what was found even when nothing was cut: after a kill -9 the tail may still
        # be only in the page cache, and it is about to be replayed into the store. If it
        # stayed unsynced, a checkpoint could make the store durable past the durable end
        # of the log, and a power loss would then leave the store ahead of its log.
        self._sync_fd(self._fd)
        self._segment_first_lsn = first_lsn
        self._salt = salt
        self._timed = timed
        self._last_time_us = last_time_us
        self._segment_size = offset
        self._last_lsn = lsn - 1

    def _open_for_append(self, path: Path) -> int:
        """The segment's file, positioned for the next record by the caller (at its end).

        Without preallocation the file is in append mode; with it, records are written at
        the file position (the zeroes ahead lie beyond the end of the records).
        """
        if self._preallocate_bytes:
            return os.open(path, os.O_RDWR)
        return os.open(path, os.O_RDWR | os.O_APPEND)

    def _last_time_in(self, first_lsn: int) -> int:
        """The commit time of the last record of a sealed segment (0 if it has none)."""
        last = 0
        try:
            for _, time_us, _ in read_segment(self._path(first_lsn).read_bytes(), first_lsn):
                last = time_us
        except CorruptLogError:
            return 0  # replay reports the damage; the time is only a lower bound for clocks
        return last

    # --- writing -------------------------------------------------------------------------

    def last_lsn(self) -> int:
        """The LSN of the last record appended (0 if none ever was)."""
        return self._last_lsn

    def first_lsn(self) -> int:
        """The LSN of the oldest record still held (or the next LSN, if none is held)."""
        return self._segments[0]

    def last_commit_time_us(self) -> int:
        """The commit time of the last record appended (0 if unknown: none, or untimed)."""
        return self._last_time_us

    def set_commit_time(self, commit_time_us: int) -> None:
        """The commit time the next `append`s record (in segments that carry times); the
        caller keeps it non-decreasing (see `last_commit_time_us`)."""
        assert commit_time_us >= 0, commit_time_us
        self._next_time_us = commit_time_us

    def append(self, payloads: Sequence[bytes]) -> int:
        """Write records with the next LSNs (not yet durable) and return the last LSN."""
        assert not self._failed, "the log failed an fsync and must not be used"
        commit_time_us = self._next_time_us
        for payload in payloads:
            if len(payload) > RECORD_BYTES_MAX:
                raise RecordTooLargeError(
                    f"record of {len(payload)} bytes exceeds {RECORD_BYTES_MAX} bytes"
                )
        stamp = COMMIT_TIME.pack(commit_time_us)
        pending: list[bytes] = []
        pending_bytes = 0
        for payload in payloads:
            stamp_bytes = COMMIT_TIME_BYTES if self._timed else 0
            frame_bytes = RECORD_HEADER_BYTES + stamp_bytes + len(payload)
            segment_has_records = self._segment_size > SEGMENT_HEADER_BYTES or pending
            if (
                segment_has_records
                and self._segment_size + pending_bytes + frame_bytes > self.segment_bytes
            ):
                self._write(pending, pending_bytes)
                pending, pending_bytes = [], 0
                self._rotate()
            lsn = self._last_lsn + len(pending) + 1
            body = stamp + payload if self._timed else payload
            pending.append(encode_record(lsn, body, self._salt))
            pending_bytes += RECORD_HEADER_BYTES + len(body)
        self._write(pending, pending_bytes)
        if payloads and self._timed:
            self._last_time_us = max(self._last_time_us, commit_time_us)
        return self._last_lsn

    def _write(self, frames: list[bytes], frames_bytes: int) -> None:
        if not frames:
            return
        try:
            if self._preallocate_bytes and self._segment_size + frames_bytes > self._zeroed_end:
                self._zero_ahead(self._segment_size + frames_bytes)
            _write_all(self._fd, b"".join(frames), self._write_fn)
        except OSError:
            # A full disk or an IO error may leave part of the batch in the file. Cut it off,
            # so the next batch does not land after a damaged record; the caller reports
            # the failure and no LSN was used.
            try:
                os.ftruncate(self._fd, self._segment_size)
                if self._preallocate_bytes:
                    os.lseek(self._fd, self._segment_size, os.SEEK_SET)
                    self._zeroed_end = self._segment_size
            except OSError:
                self._failed = True
            raise
        self._segment_size += frames_bytes
        self._last_lsn += len(frames)

    def _zero_ahead(self, needed_end: int) -> None:
        """Zero the segment from the end of its zeroes to past `needed_end` (the end of the
        records about to be written), at most to the segment's size limit."""
        step = min(
            self._preallocate_bytes,
            max(PREALLOCATE_FIRST_BYTES, self._zeroed_end),
        )
        end = max(needed_end, min(needed_end + step, self.segment_bytes))
        position = self._zeroed_end
        while position < end:
            chunk = min(end - position, ZERO_WRITE_BYTES - position % ZERO_WRITE_BYTES)
            position += os.pwrite(self._fd, memoryview(_ZEROES)[:chunk], position)
        self._zeroed_end = end

    def _cut_zeroes(self) -> None:
        """Cut the zeroes after the last record (a sealed segment ends at its last record)."""
        if self._preallocate_bytes and self._zeroed_end > self._segment_size:
            os.ftruncate(self._fd, self._segment_size)
            self._zeroed_end = self._segment_size

    def _rotate(self) -> None:
        """Close the current segment durably, then start the next one.

        Syncing the full segment before creating the next means that any record in a
        segment other than the last was synced: damage there is never a torn tail.
        """
        self._cut_zeroes()
        self.sync()
        os.close(self._fd)
        self._fd = -1
        self._salt = self._create_segment(self._last_lsn + 1)
        self._fd = self._open_for_append(self._path(self._last_lsn + 1))
        if self._preallocate_bytes:
            os.lseek(self._fd, SEGMENT_HEADER_BYTES, os.SEEK_SET)
            self._zeroed_end = SEGMENT_HEADER_BYTES
        self._segment_first_lsn = self._last_lsn + 1
        self._segment_size = SEGMENT_HEADER_BYTES
        self._timed = self._commit_times

    def seal(self) -> bool:
        """Close the segment being written (if it holds records) and start the next one, so
        that everything appended so far is in sealed segments (the archive copies only
        those). Returns whether a segment was sealed."""
        assert not self._failed, "the log failed an fsync and must not be used"
        if self._segment_size == SEGMENT_HEADER_BYTES:
            return False
        self._rotate()
        return True

    def sealed_segments(self) -> list[tuple[int, Path]]:
        """(first LSN, path) of every segment but the one being written, oldest first. The
        files never change again; they are removed only by `truncate_before`."""
        segments = list(self._segments)
        return [(first_lsn, self._path(first_lsn)) for first_lsn in segments[:-1]]

    def sync(self) -> None:
        """Make every appended record durable. An fsync failure is fatal.

        A failed fsync must never be retried: after an fsync error Linux may mark the dirty
        pages clean and drop the error, so a second fsync "succeeds" while the data never
        reached the disk. PostgreSQL learned this in 2018 ("fsyncgate") and since then
        PANICs on an fsync failure and recovers from its log on restart. We do the same: the
        log refuses all further use and the caller stops the process; a restart replays what
        is really on disk.
        """
        assert not self._failed, "the log failed an fsync and must not be used"
        self._sync_fd(self._fd)

    def writes_in_place(self, payloads: Sequence[bytes]) -> bool:
        """Whether `append(payloads)` would only write the records: into the segment being
        written, without rolling over to a new one (which syncs and closes this one) and,
        with preallocation, into zeroes already written (no zeroes to write ahead)."""
        stamp_bytes = COMMIT_TIME_BYTES if self._timed else 0
        frames_bytes = sum(RECORD_HEADER_BYTES + stamp_bytes + len(p) for p in payloads)
        end = self._segment_size + frames_bytes
        if end > self.segment_bytes:
            return False
        return not self._preallocate_bytes or end <= self._zeroed_end

    def sync_fd(self) -> int:
        """The descriptor of the segment being written, for a caller that syncs it itself,
        asynchronously (`keeldb/storage/async_sync.py`): a completed fdatasync of it makes
        every record appended so far durable, as `sync` does. It stays open until the next
        `seal`, segment roll-over (an `append` that crosses the segment size) or `close`; the
        caller must not call those while its sync is in flight."""
        assert not self._failed, "the log failed an fsync and must not be used"
        return self._fd

    def sync_failed(self, error: OSError) -> FsyncFailedError:
        """A caller's fdatasync of `sync_fd` failed: the log refuses all further use, as
        after a failed `sync`; returns the error to report."""
        self._failed = True
        failed = FsyncFailedError(f"fsync of the log in {self.directory} failed: {error}")
        failed.__cause__ = error
        return failed

    def _sync_fd(self, fd: int) -> None:
        try:
            self._fsync(fd)
        except OSError as error:
            self._failed = True
            raise FsyncFailedError(
                f"fsync of the log in {self.directory} failed: {error}"
            ) from error

    def _sync_directory(self) -> None:
        try:
            fsync_directory(self.directory, self._fsync)
        except OSError as error:
            self._failed = True
            raise FsyncFailedError(
                f"fsync of directory {self.directory} failed: {error}"
            ) from error

    def truncate_before(self, lsn: int) -> int:
        """Remove whole segments whose records all have LSNs below `lsn`; return how many.

        Only call this once the state those records produced is durable elsewhere (a
        checkpoint). The segment being written is never removed.
        """
        assert not self._failed, "the log failed an fsync and must not be used"
        removed = 0
        while len(self._segments) > 1 and self._segments[1] <= lsn:
            (self._path(self._segments[0])).unlink()
            del self._segments[0]
            removed += 1
        if removed:
            self._sync_directory()
        return removed

    # --- reading -------------------------------------------------------------------------

    def replay(self, after_lsn: int) -> Iterator[tuple[int, bytes]]:
        """Every record with an LSN above `after_lsn`, in order, each checksum verified.

        Raises CorruptLogError if a record does not verify or one is missing; a torn tail
        was already cut off when the log was opened, so any damage found here is real.
        """
        for lsn, _, payload in self.replay_timed(after_lsn):
            yield lsn, payload

    def replay_timed(self, after_lsn: int) -> Iterator[tuple[int, int, bytes]]:
        """As `replay`, with each record's commit time (0 where the segment has none)."""
        assert not self._failed, "the log failed an fsync and must not be used"
        if after_lsn >= self._last_lsn:
            return
        if after_lsn + 1 < self._segments[0]:
            raise CorruptLogError(
                f"{self.directory}: replay needs record {after_lsn + 1}, "
                f"but the log starts at {self._segments[0]}"
            )
        start = 0
        for index, first_lsn in enumerate(self._segments):
            if first_lsn <= after_lsn + 1:
                start = index
        expected_lsn = self._segments[start]
        for index in range(start, len(self._segments)):
            first_lsn = self._segments[index]
            path = self._path(first_lsn)
            if first_lsn != expected_lsn:
                raise CorruptLogError(
                    f"{path}: starts at record {first_lsn}, expected {expected_lsn}"
                )
            data = path.read_bytes()
            is_last = index == len(self._segments) - 1
            if is_last:
                # Records appended since opening are in the file; nothing lies beyond them.
                data = data[: self._segment_size]
            header = decode_segment_header_full(data)
            if header is None or header[0] != first_lsn:
                raise CorruptLogError(f"{path}: segment header does not verify")
            salt = header[1]
            timed = header[2]
            offset = SEGMENT_HEADER_BYTES
            while offset < len(data):
                end = record_end(data, offset, expected_lsn, salt)
                if end is None:
                    raise CorruptLogError(
                        f"{path}: record {expected_lsn} at byte {offset} does not verify"
                    )
                if expected_lsn > after_lsn:
                    start = offset + RECORD_HEADER_BYTES
                    if timed:
                        (time_us,) = COMMIT_TIME.unpack_from(data, start)
                        yield expected_lsn, time_us, data[start + COMMIT_TIME_BYTES : end]
                    else:
                        yield expected_lsn, 0, data[start:end]
                offset = end
                expected_lsn += 1
        if expected_lsn != self._last_lsn + 1:
            raise CorruptLogError(
                f"{self.directory}: log ends at record {expected_lsn - 1}, "
                f"expected {self._last_lsn}"
            )

    def segment_paths(self) -> list[Path]:
        return [self._path(first_lsn) for first_lsn in self._segments]

    def close(self) -> None:
        """Close the segment file; appended records not yet synced may be lost on power loss."""
        if self._fd >= 0:
            if not self._failed:
                try:
                    self._cut_zeroes()  # a clean stop leaves no zeroes to cut at the next open
                except OSError:
                    pass  # left in place: the next open cuts them
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = -1


def _write_all(fd: int, data: bytes, write: WriteFn) -> None:
    view = memoryview(data)
    while view:
        written = write(fd, view)
        view = view[written:]
