"""A completion-based fdatasync for the event loop: no thread of ours waits for the disk.

This module owns the submission of fdatasync to the kernel through io_uring and the
delivery of each completion to a callback on the event loop. It never decides what to sync
or when (the log does, `keeldb/storage/replog.py`), and never retries a failed sync.

    syncer = open_uring_sync(loop)        # None where io_uring cannot be used
    syncer.fdatasync(fd, done)            # returns at once; later, on the loop: done(None)
    ...                                   # (or done(OSError(...)) if the fdatasync failed)
    syncer.close()

How: one io_uring ring (`io_uring_setup`), an eventfd registered with it
(IORING_REGISTER_EVENTFD) that the kernel signals when it posts a completion, and that
eventfd watched with `loop.add_reader`. `fdatasync` writes one submission (IORING_OP_FSYNC
with IORING_FSYNC_DATASYNC over the whole file) and enters it with `io_uring_enter`; the
kernel runs the fdatasync in its own worker thread (io-wq), which needs no interpreter lock,
and the loop reaps the completion when it next polls. Each sync is submitted with
IOSQE_IO_DRAIN: the kernel starts it only once every sync submitted before it has completed,
so syncs run one at a time, in submission order, and their callbacks are called in that
order; a caller may submit the next sync (of data written since) while one is in flight and
the kernel starts it the moment the previous completes, without waiting for the loop.

The kernel looks the descriptor up when its worker starts the sync, not at submission: the
caller must keep `fd` open, and not reuse its number, until `done` is called.

Why io_uring and not Linux native AIO (IOCB_CMD_FDSYNC with IOCB_FLAG_RESFD), which is
simpler to call: the kernel runs an AIO fsync as work on the submitting CPU's workqueue, so
the kworker competes for that CPU with the busy event loop that submitted it; measured with
the loop busy, fdatasync-to-callback took 730-1870 us at the median with AIO, 150-310 us
with io_uring and 260-340 us with a thread of ours (docs/performance.md, "A completion-based
fdatasync").

Why the system calls through ctypes and not a library: the PyPI package `liburing` (a
binding of the C library) calls itself alpha, marks its fsync preparation "coded but not
tested" and asks for Linux 6.14; the package `libaio` needs a system library. The three
system calls, two mmaps and the structure layouts below are all this needs. The layouts are
those of the kernel's include/uapi/linux/io_uring.h (stable ABI since Linux 5.1).

Memory ordering: the submission side is read by the kernel in `io_uring_enter`, on the
submitting thread, after our stores in program order. The completion side is written by a
kernel worker on another CPU (the entry, then a release store of the tail); reading the tail
and then the entry needs load-acquire, which every load is on x86-64 (TSO) and which ctypes
cannot express elsewhere: so the ring is used on x86-64 only, and other machines keep the
disk thread (`open_uring_sync` returns None).
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import itertools
import logging
import mmap
import os
import platform
import struct
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)

# Results of a ring's fdatasync that say it did not run to its end, not that the disk failed:
# interrupted by a signal (EINTR), no kernel worker could be started for it (EAGAIN), or
# cancelled by the kernel (ECANCELED). The file's dirty pages and any write-back error are
# still pending then, so the sync is done again, blocking, on the loop (it is rare).
SYNC_NOT_RUN_ERRNOS = frozenset({errno.EINTR, errno.EAGAIN, errno.ECANCELED})

DoneFn = Callable[[OSError | None], None]  # called on the loop: None, or the sync's error
SyscallFn = Callable[..., int]  # libc's syscall(2): the result, or -1 with errno set

RING_ENTRIES = 8  # submissions the ring holds; the log has one or two syncs in flight
# System call numbers: the same on every architecture (the generic table, since 5.1).
SYS_IO_URING_SETUP = 425
SYS_IO_URING_ENTER = 426
SYS_IO_URING_REGISTER = 427
IORING_OP_NOP = 0
IORING_OP_FSYNC = 3
IORING_FSYNC_DATASYNC = 1 << 0
IOSQE_IO_DRAIN = 1 << 1  # start only after every submission before it has completed
IORING_ENTER_GETEVENTS = 1 << 0
IORING_REGISTER_EVENTFD = 4
IORING_FEAT_SINGLE_MMAP = 1 << 0
IORING_OFF_SQ_RING = 0
IORING_OFF_CQ_RING = 0x8000000
IORING_OFF_SQES = 0x10000000
PROBE_USER_DATA = 0  # the NOP submitted at opening; syncs are numbered from 1
MACHINES_SUPPORTED = ("x86_64", "amd64")  # see "Memory ordering" above

# struct io_uring_sqe, 64 bytes, as used for IORING_OP_FSYNC: opcode u8 | flags u8 |
# ioprio u16 | fd s32 | off u64 | addr u64 | len u32 | fsync_flags u32 | user_data u64 |
# buf_index u16 | personality u16 | splice_fd_in s32 | addr3 u64 | pad u64.
SQE = struct.Struct("<BBHiQQIIQHHiQQ")
# struct io_uring_cqe, 16 bytes: user_data u64 | res s32 (0, or -errno) | flags u32.
CQE = struct.Struct("<QiI")
assert SQE.size == 64
assert CQE.size == 16


class _SqringOffsets(ctypes.Structure):  # struct io_sqring_offsets
    _fields_ = [
        ("head", ctypes.c_uint32),
        ("tail", ctypes.c_uint32),
        ("ring_mask", ctypes.c_uint32),
        ("ring_entries", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("dropped", ctypes.c_uint32),
        ("array", ctypes.c_uint32),
        ("resv1", ctypes.c_uint32),
        ("user_addr", ctypes.c_uint64),
    ]


class _CqringOffsets(ctypes.Structure):  # struct io_cqring_offsets
    _fields_ = [
        ("head", ctypes.c_uint32),
        ("tail", ctypes.c_uint32),
        ("ring_mask", ctypes.c_uint32),
        ("ring_entries", ctypes.c_uint32),
        ("overflow", ctypes.c_uint32),
        ("cqes", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("resv1", ctypes.c_uint32),
        ("user_addr", ctypes.c_uint64),
    ]


class _Params(ctypes.Structure):  # struct io_uring_params, 120 bytes
    _fields_ = [
        ("sq_entries", ctypes.c_uint32),
        ("cq_entries", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("sq_thread_cpu", ctypes.c_uint32),
        ("sq_thread_idle", ctypes.c_uint32),
        ("features", ctypes.c_uint32),
        ("wq_fd", ctypes.c_uint32),
        ("resv", ctypes.c_uint32 * 3),
        ("sq_off", _SqringOffsets),
        ("cq_off", _CqringOffsets),
    ]


assert ctypes.sizeof(_Params) == 120


class AsyncSyncer(Protocol):
    """What the log needs: submit an fdatasync, be called back on the loop, stop."""

    def fdatasync(self, fd: int, done: DoneFn) -> None: ...

    def in_flight(self) -> int: ...

    def close(self) -> None: ...


class AsyncSyncUnavailableError(OSError):
    """io_uring cannot be used here (old kernel, disabled, a seccomp filter, machine)."""


def _libc_syscall() -> SyscallFn:
    libc = ctypes.CDLL(None, use_errno=True)
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    return syscall  # type: ignore[no-any-return]


class UringSync:
    """fdatasync through one io_uring ring, completed on the event loop. Use
    `open_uring_sync`; every method runs on the loop's thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, syscall: SyscallFn) -> None:
        """Set the ring up and check that it completes a submission; raises
        AsyncSyncUnavailableError (with the kernel's errno) if any step is refused."""
        self._loop = loop
        self._syscall = syscall
        self._ring_fd = -1
        self._event_fd = -1
        self._maps: list[mmap.mmap] = []
        # user_data -> the descriptor and the callback of a sync in flight
        self._done: dict[int, tuple[int, DoneFn]] = {}
        self.fdatasync_again: Callable[[int], None] = os.fdatasync  # see SYNC_NOT_RUN_ERRNOS
        self._numbers = itertools.count(PROBE_USER_DATA + 1)
        self._watching = False
        try:
            self._set_up()
            self._probe()
            loop.add_reader(self._event_fd, self._reap)
            self._watching = True
        except BaseException:
            self.close()
            raise

    def _call(self, number: int, *args: object) -> int:
        result = self._syscall(number, *args)
        if result < 0:
            code = ctypes.get_errno() or errno.EIO
            raise AsyncSyncUnavailableError(code, f"{os.strerror(code)} (system call {number})")
        return result

    def _set_up(self) -> None:
        params = _Params()
        self._ring_fd = self._call(
            SYS_IO_URING_SETUP, ctypes.c_uint(RING_ENTRIES), ctypes.byref(params)
        )
        sq, cq = params.sq_off, params.cq_off
        sq_bytes = sq.array + params.sq_entries * 4
        cq_bytes = cq.cqes + params.cq_entries * CQE.size
        if params.features & IORING_FEAT_SINGLE_MMAP:
            sq_bytes = cq_bytes = max(sq_bytes, cq_bytes)
            sq_map = cq_map = self._map(sq_bytes, IORING_OFF_SQ_RING)
        else:
            sq_map = self._map(sq_bytes, IORING_OFF_SQ_RING)
            cq_map = self._map(cq_bytes, IORING_OFF_CQ_RING)
        self._sqes = self._map(params.sq_entries * SQE.size, IORING_OFF_SQES)
        self._sq_map, self._cq_map = sq_map, cq_map
        self._sq_tail = ctypes.c_uint32.from_buffer(sq_map, sq.tail)
        self._sq_mask = ctypes.c_uint32.from_buffer(sq_map, sq.ring_mask).value
        self._sq_array = sq.array
        self._cq_head = ctypes.c_uint32.from_buffer(cq_map, cq.head)
        self._cq_tail = ctypes.c_uint32.from_buffer(cq_map, cq.tail)
        self._cq_mask = ctypes.c_uint32.from_buffer(cq_map, cq.ring_mask).value
        self._cqes = cq.cqes
        # io_uring_enter's arguments to submit one entry without waiting (made once: the
        # ctypes values are only read by each call).
        self._submit_one_args = (
            ctypes.c_uint(self._ring_fd),
            ctypes.c_uint(1),
            ctypes.c_uint(0),
            ctypes.c_uint(0),
            None,
            ctypes.c_size_t(0),
        )
        self._event_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        event_fd = ctypes.c_int32(self._event_fd)
        self._call(
            SYS_IO_URING_REGISTER,
            ctypes.c_uint(self._ring_fd),
            ctypes.c_uint(IORING_REGISTER_EVENTFD),
            ctypes.byref(event_fd),
            ctypes.c_uint(1),
        )

    def _map(self, length: int, offset: int) -> mmap.mmap:
        mapped = mmap.mmap(
            self._ring_fd,
            length,
            flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
            prot=mmap.PROT_READ | mmap.PROT_WRITE,
            offset=offset,
        )
        self._maps.append(mapped)
        return mapped

    def _probe(self) -> None:
        """Submit a NOP and wait for it: a seccomp filter may allow the setup and refuse
        the rest, and that must show now, not at the first sync of the log."""
        self._submit(IORING_OP_NOP, -1, 0, PROBE_USER_DATA)
        self._call(
            SYS_IO_URING_ENTER,
            ctypes.c_uint(self._ring_fd),
            ctypes.c_uint(1),
            ctypes.c_uint(1),
            ctypes.c_uint(IORING_ENTER_GETEVENTS),
            None,
            ctypes.c_size_t(0),
        )
        completions = self._take_completions()
        if [user_data for user_data, _ in completions] != [PROBE_USER_DATA]:
            raise AsyncSyncUnavailableError(errno.EIO, f"the ring's probe gave {completions}")
        if completions[0][1] < 0:
            code = -completions[0][1]
            raise AsyncSyncUnavailableError(code, f"the ring's probe: {os.strerror(code)}")
        try:
            os.eventfd_read(self._event_fd)
        except BlockingIOError:
            pass  # an eventfd not signalled is found out at the first sync instead

    def fdatasync(self, fd: int, done: DoneFn) -> None:
        """Submit fdatasync(fd), to start once the syncs submitted before have completed;
        `done(None)` (or `done(error)`) is called on the loop once the kernel has completed
        it. Raises OSError if the kernel refused the submission
        (nothing is then in flight and `done` is never called)."""
        assert self._ring_fd >= 0, "the ring was closed"
        assert fd >= 0, fd
        user_data = next(self._numbers)
        self._submit(IORING_OP_FSYNC, fd, IORING_FSYNC_DATASYNC, user_data, IOSQE_IO_DRAIN)
        self._done[user_data] = (fd, done)
        try:
            submitted = self._call(SYS_IO_URING_ENTER, *self._submit_one_args)
            if submitted != 1:
                raise OSError(errno.EAGAIN, f"the ring took {submitted} submissions, not 1")
        except OSError:
            del self._done[user_data]
            raise

    def in_flight(self) -> int:
        return len(self._done)

    def _submit(
        self, opcode: int, fd: int, fsync_flags: int, user_data: int, flags: int = 0
    ) -> None:
        """Write one submission at the ring's tail and publish it (not yet entered)."""
        tail = self._sq_tail.value
        index = tail & self._sq_mask
        SQE.pack_into(
            self._sqes, index * SQE.size, opcode, flags, 0, fd, 0, 0, 0, fsync_flags,
            user_data, 0, 0, 0, 0, 0,
        )  # fmt: skip
        struct.pack_into("<I", self._sq_map, self._sq_array + index * 4, index)
        self._sq_tail.value = (tail + 1) & 0xFFFFFFFF

    def _take_completions(self) -> list[tuple[int, int]]:
        """(user_data, res) of every completion posted, in order; frees their entries."""
        head = self._cq_head.value
        tail = self._cq_tail.value
        taken = []
        while head != tail:
            offset = self._cqes + (head & self._cq_mask) * CQE.size
            user_data, result, _ = CQE.unpack_from(self._cq_map, offset)
            taken.append((user_data, result))
            head = (head + 1) & 0xFFFFFFFF
        self._cq_head.value = head
        return taken

    def _reap(self) -> None:
        """On the loop, when the eventfd is readable: hand every completion to its callback."""
        try:
            os.eventfd_read(self._event_fd)
        except BlockingIOError:
            return
        for user_data, result in self._take_completions():
            pending = self._done.pop(user_data, None)
            if pending is None:
                continue
            fd, done = pending
            if result < 0 and -result in SYNC_NOT_RUN_ERRNOS:
                result = self._sync_again(fd, -result)
            done(None if result >= 0 else OSError(-result, os.strerror(-result)))

    def _sync_again(self, fd: int, code: int) -> int:
        """The sync of `fd` did not run (`code`, one of SYNC_NOT_RUN_ERRNOS): do it now, in
        this thread. The descriptor is still open (its owner closes it only after `done`),
        and completions are handed on in order. Returns 0 or minus the errno."""
        log.warning(
            "an io_uring fdatasync ended with %s without running; synced again on the loop",
            errno.errorcode.get(code, str(code)),
        )
        try:
            self.fdatasync_again(fd)
        except OSError as error:
            return -(error.errno or errno.EIO)
        return 0

    def close(self) -> None:
        """Stop watching and free the ring. Syncs still in flight complete in the kernel,
        but their callbacks are never called."""
        if self._watching:
            self._watching = False
            self._loop.remove_reader(self._event_fd)
        self._done.clear()
        for name in ("_sq_tail", "_cq_head", "_cq_tail"):
            if hasattr(self, name):
                delattr(self, name)  # the ctypes views hold the maps open
        for mapped in self._maps:
            mapped.close()
        self._maps = []
        if self._event_fd >= 0:
            os.close(self._event_fd)
            self._event_fd = -1
        if self._ring_fd >= 0:
            os.close(self._ring_fd)
            self._ring_fd = -1


def open_uring_sync(
    loop: asyncio.AbstractEventLoop,
    *,
    syscall: SyscallFn | None = None,
    machine: str | None = None,
) -> UringSync | None:
    """A ring for completion-based fdatasync, or None (logged) where io_uring cannot be
    used: another machine than x86-64, a kernel without io_uring (ENOSYS), io_uring
    disabled by /proc/sys/kernel/io_uring_disabled or a seccomp filter (EPERM, EACCES),
    too little locked memory (ENOMEM). `syscall` and `machine` are replaceable by tests."""
    machine = (machine if machine is not None else platform.machine()).lower()
    if machine not in MACHINES_SUPPORTED:
        log.info("io_uring fdatasync not used on %s; the log syncs in its disk thread", machine)
        return None
    try:
        return UringSync(loop, syscall if syscall is not None else _libc_syscall())
    except (OSError, ValueError) as error:
        log.info("io_uring unavailable (%s); the log syncs in its disk thread", error)
        return None


class CallSync:
    """The same interface over a plain fsync function, run on the loop in a later
    iteration: what the log uses when it was given a disk that records or fails its
    fsyncs (tests), so that its completion-driven path runs there too."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fsync: Callable[[int], None]) -> None:
        self._loop = loop
        self._fsync = fsync
        self._handles: set[asyncio.Handle] = set()

    def fdatasync(self, fd: int, done: DoneFn) -> None:
        handle: asyncio.Handle

        def run() -> None:
            self._handles.discard(handle)
            try:
                self._fsync(fd)
            except OSError as error:
                done(error)
                return
            done(None)

        handle = self._loop.call_soon(run)
        self._handles.add(handle)

    def in_flight(self) -> int:
        return len(self._handles)

    def close(self) -> None:
        for handle in self._handles:
            handle.cancel()
        self._handles.clear()
