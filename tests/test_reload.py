"""What a SIGHUP reload applies in place and what needs a restart (pure planning)."""

from __future__ import annotations

from pathlib import Path

from forwarder.config import parse_config
from forwarder.reload import keep_running, plan

BASE = """
[listen]
plain_http = true
port = 8443
max_body_bytes = "10MiB"
[webhook]
secret = "first-secret-value"
[outputs.local]
type = "file"
path = "out.jsonl"
[outputs.siem]
type = "syslog"
endpoint = "127.0.0.1:514"
"""


def test_no_change_plans_nothing(tmp_path: Path) -> None:
    config = parse_config(BASE, base_dir=tmp_path)
    changes = plan(config, parse_config(BASE, base_dir=tmp_path))
    assert changes.summary() == [] and changes.restart_needed == ()


def test_outputs_secrets_and_limits_reload_in_place(tmp_path: Path) -> None:
    old = parse_config(BASE, base_dir=tmp_path)
    text = (
        BASE.replace('secret = "first-secret-value"', 'secrets = ["first-secret-value", "second-secret"]')
        .replace('endpoint = "127.0.0.1:514"', 'endpoint = "127.0.0.1:1514"')
        .replace('max_body_bytes = "10MiB"', 'max_body_bytes = "20MiB"')
        + '[outputs.archive]\ntype = "file"\npath = "archive.jsonl"\n'
    )
    text = text.replace('[outputs.local]\ntype = "file"\npath = "out.jsonl"\n', "")
    changes = plan(old, parse_config(text, base_dir=tmp_path))
    assert changes.secrets_changed and changes.listen_changed
    assert changes.outputs_added == ("archive",)
    assert changes.outputs_removed == ("local",)
    assert changes.outputs_replaced == ("siem",)
    assert changes.restart_needed == ()


def test_socket_and_buffer_settings_need_a_restart_and_keep_running_values(tmp_path: Path) -> None:
    old = parse_config(BASE, base_dir=tmp_path)
    new = parse_config(BASE.replace("port = 8443", "port = 9443") + '[buffer]\nmax_bytes = "2GiB"\n', base_dir=tmp_path)
    changes = plan(old, new)
    assert changes.restart_needed == ("listen.port", "buffer.max_bytes")
    kept = keep_running(old, new)
    assert kept.listen.port == 8443 and kept.buffer.max_bytes == old.buffer.max_bytes
