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
    assert main(["replay", "--config", str(config), "--output", "local", "--since", "1h", "--until", "2h"]) == 2
    assert "--since must be earlier than --until" in capsys.readouterr().err
    assert main(["status", "--config", str(config)]) == 0
    assert "daemon: not running" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["flatten", "--timestamp", "garbage", "x.json"],
        ["flatten", "--timestamp", "1700000000", "x.json"],
        ["replay", "--output", "local", "--since", "garbage"],
    ],
)
def test_malformed_arguments_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and "ISO 8601" in capsys.readouterr().err


def test_flatten_reads_stdin_and_warns_about_an_unexpected_shape(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "forwarder", "flatten", "-"],
        input=b'{"newIssues": [1, 2]}',
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0 and result.stdout == b""
    assert b"2 of 2 newIssues elements are not objects" in result.stderr


def test_send_test_takes_a_sample_name_without_its_suffix() -> None:
    from forwarder.cli import _parser

    args = _parser().parse_args(["send-test", "--sample", "snapshot_container"])
    assert args.sample == "snapshot_container.json"
