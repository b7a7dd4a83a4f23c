"""The operator commands' edges: unreadable input, a closed pipe, a daemon that is not running."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from forwarder.buffer import SqliteBuffer
from forwarder.buffer.sqlite import DeadLetter
from forwarder.cli import main
from forwarder.types import Position, Record
from tests.helpers import issue, snapshot_body

pytestmark = pytest.mark.anyio


def test_flatten_of_a_missing_file_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flatten", str(tmp_path / "nope.json")]) == 1
    err = capsys.readouterr().err
    assert err == f"error: cannot read {tmp_path / 'nope.json'}: No such file or directory\n"


def test_flatten_into_a_pipe_closed_early_exits_quietly(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_bytes(snapshot_body([issue(f"SNYK-{n}", description="d" * 2000) for n in range(500)]))
    command = f"{sys.executable} -m forwarder flatten {big} | head -c 100 >/dev/null"
    result = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=60)
    assert result.stderr == "" and result.returncode == 0


def test_help_describes_the_product() -> None:
    result = subprocess.run([sys.executable, "-m", "forwarder", "--help"], capture_output=True, text=True, timeout=30)
    assert "Receive signed Snyk webhooks" in result.stdout


async def test_replay_while_the_daemon_is_stopped_says_when_they_will_be_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also: status and replay only read the buffer, so they work without the secrets' environment."""
    monkeypatch.delenv("SNYK_FWD_TEST_UNSET", raising=False)
    state = tmp_path / "state"
    config = tmp_path / "config.toml"
    config.write_text(
        f'[listen]\nplain_http = true\n[state]\ndirectory = "{state}"\n'
        '[webhook]\nsecret = { env = "SNYK_FWD_TEST_UNSET" }\n'
        f'[outputs.local]\ntype = "file"\npath = "{tmp_path / "out.jsonl"}"\n'
    )
    buffer = SqliteBuffer.open(state, outputs=["local"])
    record = Record("r1", Position(1, 0), 0, "high", "introduced", {})
    await buffer.advance("local", None, dead=[DeadLetter(record, "refused", 1, b"x")])
    await buffer.close()
    assert main(["replay", "--config", str(config), "--output", "local"]) == 0
    assert "the daemon is not running: it sends them when it starts" in capsys.readouterr().out
    assert main(["status", "--config", str(config)]) == 0
    assert "daemon: not running" in capsys.readouterr().out
