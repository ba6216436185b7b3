"""The write-ahead log: framing, checksums, torn tails, mid-log damage, segments, fsync."""

from __future__ import annotations

import os
import random
import struct
import zlib
from pathlib import Path

import pytest

from keeldb.storage.wal import (
    RECORD_BYTES_MAX,
    RECORD_HEADER_BYTES,
    SEGMENT_HEADER_BYTES,
    CorruptLogError,
    FsyncFailedError,
    LogInUseError,
    RecordTooLargeError,
    WriteAheadLog,
    encode_record,
    segment_name,
)


def no_fsync(fd: int) -> None:
    """For tests of formats, not of durability: a disk that syncs instantly."""


def payloads(count: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(rng.randrange(0, 40)) + b"#%d" % i for i in range(count)]


def write_log(directory: Path, records: list[bytes], **kwargs: object) -> WriteAheadLog:
    wal = WriteAheadLog(directory, **kwargs)  # type: ignore[arg-type]
    wal.append(records)
    wal.sync()
    return wal


def read_all(directory: Path, after_lsn: int = 0, **kwargs: object) -> list[tuple[int, bytes]]:
    wal = WriteAheadLog(directory, **kwargs)  # type: ignore[arg-type]
    try:
        return list(wal.replay(after_lsn))
    finally:
        wal.close()


def only_segment(directory: Path) -> Path:
    (path,) = sorted(directory.glob("*.wal"))
    return path


def test_append_returns_consecutive_lsns_starting_at_one(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    assert wal.append([b"a", b"b"]) == 2
    assert wal.append([b"c"]) == 3
    assert wal.append([]) == 3
    assert list(wal.replay(0)) == [(1, b"a"), (2, b"b"), (3, b"c")]
    wal.close()


def test_records_survive_reopening(tmp_path: Path) -> None:
    records = payloads(50)
    write_log(tmp_path, records).close()
    assert read_all(tmp_path) == list(enumerate(records, start=1))


def test_replay_after_an_lsn_yields_only_later_records(tmp_path: Path) -> None:
    records = payloads(10)
    write_log(tmp_path, records).close()
    assert read_all(tmp_path, after_lsn=7) == [(8, records[7]), (9, records[8]), (10, records[9])]
    assert read_all(tmp_path, after_lsn=10) == []


def test_an_empty_directory_continues_from_the_start_lsn(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, start_lsn=41)
    assert wal.last_lsn() == 41
    assert wal.append([b"x"]) == 42
    wal.sync()
    wal.close()
    assert only_segment(tmp_path).name == segment_name(42)
    # start_lsn only matters for an empty directory.
    assert WriteAheadLog(tmp_path, start_lsn=7).last_lsn() == 42


def test_record_frame_is_length_crc_lsn_payload(tmp_path: Path) -> None:
    frame = encode_record(5, b"hello", salt=99)
    length, crc, lsn = struct.unpack_from("<IIQ", frame)
    assert (length, lsn, frame[RECORD_HEADER_BYTES:]) == (5, 5, b"hello")
    assert crc == zlib.crc32(struct.pack("<QIQ", 99, 5, 5) + b"hello")
    write_log(tmp_path, [b"hello"]).close()
    data = only_segment(tmp_path).read_bytes()
    magic, first_lsn, salt, header_crc = struct.unpack_from("<8sQQI", data)
    assert (magic, first_lsn, header_crc) == (b"KEELWAL1", 1, zlib.crc32(data[:24]))
    assert data[SEGMENT_HEADER_BYTES:] == encode_record(1, b"hello", salt)


def test_each_segment_gets_its_own_random_salt(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, segment_bytes=100)
    for i in range(5):
        wal.append([b"x" * 60])
    wal.close()
    salts = {struct.unpack_from("<8sQQ", p.read_bytes())[2] for p in tmp_path.glob("*.wal")}
    assert len(salts) == 5


def test_torn_tail_at_every_byte_offset_is_cut_back_to_the_last_whole_record(
    tmp_path: Path,
) -> None:
    records = payloads(6)
    source = tmp_path / "source"
    write_log(source, records).close()
    original = only_segment(source).read_bytes()
    boundaries = [SEGMENT_HEADER_BYTES]
    for record in records:
        boundaries.append(boundaries[-1] + RECORD_HEADER_BYTES + len(record))
    assert boundaries[-1] == len(original)
    for cut in range(SEGMENT_HEADER_BYTES, len(original) + 1):
        case = tmp_path / f"cut{cut}"
        case.mkdir()
        (case / segment_name(1)).write_bytes(original[:cut])
        whole = sum(1 for boundary in boundaries[1:] if boundary <= cut)
        wal = WriteAheadLog(case, fsync=no_fsync)
        assert wal.last_lsn() == whole, cut
        assert list(wal.replay(0)) == list(enumerate(records[:whole], start=1)), cut
        # The file is cut back, so the next record follows the last good one.
        assert wal.append([b"next"]) == whole + 1
        wal.sync()
        wal.close()
        assert read_all(case, fsync=no_fsync)[-1] == (whole + 1, b"next")
        assert (case / segment_name(1)).stat().st_size == boundaries[
            whole
        ] + RECORD_HEADER_BYTES + 4


@pytest.mark.parametrize(
    "tail",
    [b"\x00" * 1000, b"\xff" * 37, bytes(range(256)) * 3, b"garbage"],
    ids=["zeroes", "ones", "pattern", "text"],
)
def test_garbage_after_the_last_record_is_discarded(tmp_path: Path, tail: bytes) -> None:
    records = payloads(5)
    write_log(tmp_path, records).close()
    with only_segment(tmp_path).open("ab") as file:
        file.write(tail)
    assert read_all(tmp_path) == list(enumerate(records, start=1))
    assert only_segment(tmp_path).stat().st_size == SEGMENT_HEADER_BYTES + sum(
        RECORD_HEADER_BYTES + len(r) for r in records
    )


def test_a_flipped_bit_in_the_last_record_discards_only_that_record(tmp_path: Path) -> None:
    records = payloads(5)
    write_log(tmp_path, records).close()
    path = only_segment(tmp_path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    assert read_all(tmp_path) == list(enumerate(records[:4], start=1))


def test_a_bad_record_followed_by_good_ones_raises_corrupt_log_error(tmp_path: Path) -> None:
    records = [b"record-%03d" % i for i in range(20)]
    wal = WriteAheadLog(tmp_path)
    for record in records:
        wal.append([record])
        wal.sync()
    wal.close()
    path = only_segment(tmp_path)
    data = bytearray(path.read_bytes())
    position = data.index(b"record-007")
    data[position + 3] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptLogError, match="record 8 .* does not verify, but a valid record"):
        WriteAheadLog(tmp_path)
    # Nothing was cut off: the damage is left for repair.
    assert path.read_bytes() == bytes(data)


def test_a_damaged_length_field_in_the_middle_still_raises(tmp_path: Path) -> None:
    records = [b"r%02d" % i for i in range(10)]
    write_log(tmp_path, records).close()
    path = only_segment(tmp_path)
    data = bytearray(path.read_bytes())
    third = SEGMENT_HEADER_BYTES + 2 * (RECORD_HEADER_BYTES + 3)
    struct.pack_into("<I", data, third, 0xFFFF)
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptLogError):
        WriteAheadLog(tmp_path)


def test_crc_mismatch_in_an_older_segment_raises_on_replay(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, segment_bytes=200)
    for i in range(30):
        wal.append([b"payload-%02d" % i])
    wal.sync()
    wal.close()
    first = min(tmp_path.glob("*.wal"))
    data = bytearray(first.read_bytes())
    data[SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES + 2] ^= 0x01
    first.write_bytes(bytes(data))
    wal = WriteAheadLog(tmp_path, segment_bytes=200)
    with pytest.raises(CorruptLogError, match="record 1 at byte .* does not verify"):
        list(wal.replay(0))
    wal.close()


def test_segments_roll_over_at_the_size_limit_and_replay_across_them(tmp_path: Path) -> None:
    records = payloads(100)
    wal = WriteAheadLog(tmp_path, segment_bytes=300)
    for record in records:
        wal.append([record])
    wal.sync()
    wal.close()
    segments = sorted(tmp_path.glob("*.wal"))
    assert len(segments) > 5
    for segment in segments:
        assert segment.stat().st_size <= 300 or segment == segments[-1]
    assert read_all(tmp_path, segment_bytes=300) == list(enumerate(records, start=1))


def test_a_record_larger_than_a_segment_gets_a_segment_of_its_own(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, segment_bytes=100)
    wal.append([b"a", b"b" * 500, b"c"])
    wal.sync()
    wal.close()
    assert len(list(tmp_path.glob("*.wal"))) == 3
    assert [p for _, p in read_all(tmp_path, segment_bytes=100)] == [b"a", b"b" * 500, b"c"]


def test_truncate_before_removes_only_whole_segments_below_the_lsn(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, segment_bytes=200)
    for i in range(40):
        wal.append([b"payload-%02d" % i])
    wal.sync()
    firsts = [int(p.name[:20]) for p in sorted(tmp_path.glob("*.wal"))]
    assert len(firsts) >= 4
    # An LSN inside the third segment keeps the third segment.
    removed = wal.truncate_before(firsts[2] + 1)
    assert removed == 2
    assert wal.first_lsn() == firsts[2]
    assert next(lsn for lsn, _ in wal.replay(firsts[2] - 1)) == firsts[2]
    with pytest.raises(CorruptLogError, match="replay needs record 1"):
        list(wal.replay(0))
    # The segment being written is never removed.
    wal.truncate_before(10_000)
    assert len(list(tmp_path.glob("*.wal"))) == 1
    assert wal.append([b"more"]) == 41
    wal.close()


def test_a_missing_middle_segment_raises_on_replay(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, segment_bytes=200)
    for i in range(40):
        wal.append([b"payload-%02d" % i])
    wal.sync()
    wal.close()
    sorted(tmp_path.glob("*.wal"))[1].unlink()
    wal = WriteAheadLog(tmp_path, segment_bytes=200)
    with pytest.raises(CorruptLogError, match="expected"):
        list(wal.replay(0))
    wal.close()


def test_a_torn_segment_header_of_a_new_segment_is_recreated(tmp_path: Path) -> None:
    wal = write_log(tmp_path, [b"one", b"two"])
    wal.close()
    (tmp_path / segment_name(3)).write_bytes(b"\x00" * 7)
    wal = WriteAheadLog(tmp_path)
    assert wal.last_lsn() == 2
    assert wal.append([b"three"]) == 3
    wal.sync()
    wal.close()
    assert [p for _, p in read_all(tmp_path)] == [b"one", b"two", b"three"]


def test_a_damaged_header_of_a_segment_with_records_raises(tmp_path: Path) -> None:
    write_log(tmp_path, [b"one", b"two"]).close()
    path = only_segment(tmp_path)
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptLogError, match="segment header"):
        WriteAheadLog(tmp_path)


def test_records_over_the_limit_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    with pytest.raises(RecordTooLargeError):
        wal.append([b"ok", b"x" * (RECORD_BYTES_MAX + 1)])
    assert wal.last_lsn() == 0
    assert wal.append([b"ok"]) == 1
    wal.close()


class FailingFsync:
    """A disk whose fsync fails from the n-th call on."""

    def __init__(self, fail_from_call: int) -> None:
        self.calls = 0
        self.fail_from_call = fail_from_call

    def __call__(self, fd: int) -> None:
        self.calls += 1
        if self.calls >= self.fail_from_call:
            raise OSError(5, "Input/output error")
        os.fsync(fd)


def test_a_failed_fsync_is_fatal_and_never_retried(tmp_path: Path) -> None:
    fsync = FailingFsync(fail_from_call=4)  # creating and opening the segment use three
    wal = WriteAheadLog(tmp_path, fsync=fsync)
    wal.append([b"a"])
    with pytest.raises(FsyncFailedError):
        wal.sync()
    calls = fsync.calls
    with pytest.raises(AssertionError):
        wal.sync()
    with pytest.raises(AssertionError):
        wal.append([b"b"])
    assert fsync.calls == calls
    wal.close()


def test_sync_fsyncs_the_segment_and_creation_fsyncs_the_directory(tmp_path: Path) -> None:
    synced: list[str] = []

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        os.fsync(fd)

    if not Path("/proc/self/fd").exists():
        pytest.skip("needs /proc to name file descriptors")
    wal = WriteAheadLog(tmp_path, fsync=recording_fsync, segment_bytes=100)
    # Created: the file, then its name; opened: what the file holds is made durable.
    assert synced == [
        str(tmp_path / segment_name(1)),
        str(tmp_path),
        str(tmp_path / segment_name(1)),
    ]
    synced.clear()
    wal.append([b"x" * 50])
    wal.sync()
    assert synced == [str(tmp_path / segment_name(1))]
    synced.clear()
    wal.append([b"y" * 50])  # does not fit: the old segment is synced, the new one created
    assert synced == [
        str(tmp_path / segment_name(1)),
        str(tmp_path / segment_name(2)),
        str(tmp_path),
    ]
    synced.clear()
    wal.truncate_before(2)
    assert synced == [str(tmp_path)]
    wal.close()


def test_random_damage_never_yields_a_wrong_record(tmp_path: Path) -> None:
    """Whatever single byte is damaged, replay returns a prefix of the truth or raises."""
    records = payloads(12, seed=7)
    source = tmp_path / "source"
    write_log(source, records).close()
    original = only_segment(source).read_bytes()
    rng = random.Random(3)
    truth = list(enumerate(records, start=1))
    for case_number in range(300):
        data = bytearray(original)
        position = rng.randrange(SEGMENT_HEADER_BYTES, len(data))
        data[position] ^= 1 << rng.randrange(8)
        case = tmp_path / f"case{case_number}"
        case.mkdir()
        (case / segment_name(1)).write_bytes(bytes(data))
        try:
            got = read_all(case)
        except CorruptLogError:
            continue
        assert got == truth[: len(got)]
        # Only damage in the last record may be taken for a torn tail.
        assert len(got) >= len(truth) - 1


class FullDisk:
    """A disk that accepts `room` more bytes, writing part of a request before failing."""

    def __init__(self, room: int) -> None:
        self.room = room

    def __call__(self, fd: int, data: memoryview) -> int:
        if self.room == 0:
            raise OSError(28, "No space left on device")
        written = os.write(fd, data[: self.room])
        self.room -= written
        return written


def test_a_failed_write_leaves_no_partial_record_and_uses_no_lsn(tmp_path: Path) -> None:
    disk = FullDisk(room=10_000)
    wal = WriteAheadLog(tmp_path, write=disk)
    assert wal.append([b"first"]) == 1
    wal.sync()
    size = only_segment(tmp_path).stat().st_size
    disk.room = 30  # the next group is cut in the middle of its second record
    with pytest.raises(OSError, match="No space left"):
        wal.append([b"a" * 10, b"b" * 10])
    assert wal.last_lsn() == 1
    assert only_segment(tmp_path).stat().st_size == size
    disk.room = 10_000  # space is freed: the log carries on where it was
    assert wal.append([b"second"]) == 2
    wal.sync()
    wal.close()
    assert read_all(tmp_path) == [(1, b"first"), (2, b"second")]


def test_a_second_writer_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    first = WriteAheadLog(tmp_path)
    with pytest.raises(LogInUseError):
        WriteAheadLog(tmp_path)
    first.close()
    # Closing (or the process dying) releases the directory.
    WriteAheadLog(tmp_path).close()


def test_a_new_log_directory_is_made_durable_in_its_parents(tmp_path: Path) -> None:
    synced: list[str] = []

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        os.fsync(fd)

    if not Path("/proc/self/fd").exists():
        pytest.skip("needs /proc to name file descriptors")
    WriteAheadLog(tmp_path / "data" / "wal", fsync=recording_fsync).close()
    assert synced[:2] == [str(tmp_path), str(tmp_path / "data")]


def test_a_torn_record_whose_payload_holds_a_record_is_still_a_torn_tail(
    tmp_path: Path,
) -> None:
    # A client may store bytes that frame a record with the next LSN. Without the segment's
    # salt they never verify: a record carrying them and cut short is a torn tail.
    decoy = encode_record(3, b"decoy", salt=0)
    write_log(tmp_path, [b"one", b"two" + decoy + b"rest"]).close()
    path = only_segment(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: data.index(decoy) + len(decoy) + 2])
    assert read_all(tmp_path) == [(1, b"one")]


def test_a_whole_record_that_fails_its_crc_is_damage_if_a_record_follows_it(
    tmp_path: Path,
) -> None:
    write_log(tmp_path, [b"one", b"two", b"three"]).close()
    path = only_segment(tmp_path)
    data = bytearray(path.read_bytes())
    data[data.index(b"two")] ^= 0x20
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptLogError, match="record 2 .* a valid record 3"):
        WriteAheadLog(tmp_path)
