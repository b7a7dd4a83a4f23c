"""The file output: one line per record, appended, survives logrotate."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from forwarder.errors import OutputError
from forwarder.outputs.file import FileOutput, FileSettings
from forwarder.types import Delivered, Message, Position, Record, Retry

pytestmark = pytest.mark.anyio


def message(n: int) -> Message:
    return Message(Record(f"id{n}", Position(1, n), 0, "high", "introduced", {}), b'{"n":%d}' % n)


async def test_appends_lines_and_reopens_after_rotation(tmp_path: Path) -> None:
    path = tmp_path / "out" / "records.jsonl"
    output = FileOutput("f", FileSettings(path=path))
    assert isinstance(await output.send([message(1), message(2)]), Delivered)
    path.rename(tmp_path / "out" / "records.jsonl.1")  # logrotate
    assert isinstance(await output.send([message(3)]), Delivered)
    await output.aclose()
    assert (tmp_path / "out" / "records.jsonl.1").read_bytes() == b'{"n":1}\n{"n":2}\n'
    assert path.read_bytes() == b'{"n":3}\n'


async def test_an_unwritable_path_is_a_retry_and_a_failed_healthcheck(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    output = FileOutput("f", FileSettings(path=blocker / "records.jsonl"))
    outcome = await output.send([message(1)])
    assert isinstance(outcome, Retry) and "records.jsonl" in outcome.reason
    with pytest.raises(OutputError, match="not-a-dir is not a directory"):
        await output.healthcheck()


async def test_the_healthcheck_creates_nothing(tmp_path: Path) -> None:
    """check-config --probe runs as root: a file or directory it made would be root's."""
    output = FileOutput("f", FileSettings(path=tmp_path / "new" / "dir" / "records.jsonl"))
    await output.healthcheck()
    assert list(tmp_path.iterdir()) == []
    existing = tmp_path / "records.jsonl"
    existing.write_text("")
    await FileOutput("f", FileSettings(path=existing)).healthcheck()
    with pytest.raises(OutputError, match="not a regular file"):
        await FileOutput("f", FileSettings(path=tmp_path)).healthcheck()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
async def test_the_healthcheck_names_an_unwritable_directory(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(OutputError, match="locked is not writable"):
        await FileOutput("f", FileSettings(path=locked / "records.jsonl")).healthcheck()


async def test_cef_and_leef_lines_in_a_file(tmp_path: Path) -> None:
    from forwarder.formats.cef import CefFormatter
    from forwarder.formats.leef import LeefFormatter
    from tests.helpers import flatten_all, sample

    records = flatten_all(sample("snapshot_small.json"))
    for name, formatter in (("cef", CefFormatter()), ("leef", LeefFormatter())):
        output = FileOutput("f", FileSettings(path=tmp_path / f"{name}.log"))
        assert isinstance(await output.send([Message(r, formatter(r)) for r in records]), Delivered)
        await output.aclose()
        lines = (tmp_path / f"{name}.log").read_text(encoding="utf-8").splitlines()
        assert len(lines) == 3
        assert all(line.startswith(f"{name.upper()}:") for line in lines)
