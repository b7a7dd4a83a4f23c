"""Group commit: one thread owns the write connection and commits many operations per fsync.

Why a single writer thread instead of handing each request to an executor: with
``synchronous=FULL`` every COMMIT costs one fsync (~0.2 ms here, milliseconds on network disks),
so one commit per request caps throughput at the disk's fsync rate, and a thread hop per request
costs more than the work itself. Here the event loop only appends to a queue; the thread takes
everything queued so far, runs it in ONE transaction, commits (one fsync), and settles all the
futures with ONE ``call_soon_threadsafe``. While a commit is in progress the next batch
accumulates, so batches grow exactly when the disk is the bottleneck.

Contract of :meth:`GroupCommitter.submit`: the returned future resolves only after the COMMIT
that contains the operation has returned, i.e. after SQLite's fsync of the WAL. If the batch
fails, each operation is retried alone in its own transaction, so one bad operation (or one
that hits a full disk) never fails its neighbours; an operation that still fails gets the
exception, already mapped to :class:`~forwarder.errors.StorageError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

from forwarder.errors import DiskFull, StorageError

T = TypeVar("T")


class TransactionHooks(Protocol):
    def committed(self) -> None: ...

    def rolled_back(self) -> None: ...


Operation = Callable[[sqlite3.Connection], Any]

log = logging.getLogger("forwarder.buffer")

_STOP = object()
MAX_OPS_PER_COMMIT = 2048

# Primary result codes (https://www.sqlite.org/rescode.html); extended codes keep them in the low byte.
SQLITE_IOERR = 10
SQLITE_FULL = 13


def storage_error(exc: BaseException) -> StorageError:
    """Map a sqlite3/OS failure to our tree; disk-full gets its own class so callers can say so."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF == SQLITE_FULL:
        return DiskFull(f"disk full while writing the buffer: {exc}")
    if isinstance(exc, OSError) and exc.errno == 28:  # ENOSPC
        return DiskFull(f"disk full while writing the buffer: {exc}")
    return StorageError(f"buffer write failed: {exc.__class__.__name__}: {exc}")


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """The one way to write: BEGIN IMMEDIATE (take the write lock up front, so a transaction
    never fails half-way on lock upgrade), then COMMIT, or ROLLBACK on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        # also when COMMIT itself failed (a full disk): leave no transaction open behind us
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


class GroupCommitter:
    """Owns ``conn`` on a private thread; see the module docstring for the contract."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        loop: asyncio.AbstractEventLoop,
        on_commit: Callable[[float, int], None] | None = None,
        hooks: TransactionHooks | None = None,
    ) -> None:
        self._conn = conn
        self._hooks = hooks
        self._loop = loop
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._on_commit = on_commit
        self._thread = threading.Thread(target=self._run, name="buffer-writer", daemon=True)
        self._closed = False
        self._thread.start()

    def submit(self, op: Callable[[sqlite3.Connection], T], *, transactional: bool = True) -> asyncio.Future[T]:
        """Queue ``op``; ``transactional=False`` runs it alone, outside any transaction (checkpoints)."""
        if self._closed:
            raise StorageError("buffer is closed")
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put((op, future, transactional))
        return future

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._closed

    def close(self, timeout: float = 30.0) -> None:
        """Finish what is queued, then stop the thread. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)

    # --- the writer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        held = None  # a non-transactional operation waiting for the batch before it to commit
        while not stopping:
            item = held if held is not None else self._queue.get()
            held = None
            if item is _STOP:
                break
            op, future, transactional = item
            if not transactional:
                self._loop.call_soon_threadsafe(_settle, [self._run_alone(op, future)])
                continue
            batch = [(op, future)]
            while len(batch) < MAX_OPS_PER_COMMIT:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                if not item[2]:
                    held = item
                    break
                batch.append((item[0], item[1]))
            settled = self._commit(batch)
            self._loop.call_soon_threadsafe(_settle, settled)
        if held is not None and held is not _STOP:
            self._loop.call_soon_threadsafe(_settle, [self._run_alone(held[0], held[1])])

    def _run_alone(self, op: Operation, fut: asyncio.Future[Any]) -> tuple[asyncio.Future[Any], bool, Any]:
        try:
            return (fut, True, op(self._conn))
        except Exception as exc:
            return (fut, False, _mapped(exc))

    def _commit(
        self, batch: list[tuple[Operation, asyncio.Future[Any]]]
    ) -> list[tuple[asyncio.Future[Any], bool, Any]]:
        started = time.perf_counter()
        try:
            with self._transaction() as conn:
                results = [op(conn) for op, _ in batch]
        except Exception as exc:  # one bad operation must not fail the others: retry each alone
            if len(batch) == 1:
                return [(batch[0][1], False, _mapped(exc))]
            return [self._commit_alone(op, fut) for op, fut in batch]
        if self._on_commit is not None:
            self._on_commit(time.perf_counter() - started, len(batch))
        return [(fut, True, result) for (_, fut), result in zip(batch, results, strict=True)]

    def _commit_alone(self, op: Operation, fut: asyncio.Future[Any]) -> tuple[asyncio.Future[Any], bool, Any]:
        try:
            with self._transaction() as conn:
                return (fut, True, op(conn))
        except Exception as exc:
            return (fut, False, _mapped(exc))

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """:func:`transaction`, telling the hooks whether it committed (in-memory state that
        mirrors the database must follow commits, never rolled-back work)."""
        try:
            with transaction(self._conn) as conn:
                yield conn
        except BaseException:
            if self._hooks is not None:
                self._hooks.rolled_back()
            raise
        if self._hooks is not None:
            self._hooks.committed()


def _mapped(exc: Exception) -> Exception:
    if isinstance(exc, sqlite3.Error | OSError):
        return storage_error(exc)
    return exc


def _settle(settled: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in settled:
        if future.done():  # the caller went away (cancelled); the work is committed regardless
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
