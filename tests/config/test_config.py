"""Configuration: every mistake names the key and the fix; secrets come from four places."""

from __future__ import annotations

from pathlib import Path

import pytest

from forwarder.cli import main
from forwarder.config import load_config, parse_config
from forwarder.config.embedded import TEXT, embedded_config
from forwarder.errors import ConfigError
from tests.support.daemon import LocalCA

REPO = Path(__file__).resolve().parents[2]

MINIMAL = """
[listen]
plain_http = true
[webhook]
secret = "s3cret-value"
[outputs.local]
type = "file"
path = "out.jsonl"
"""


def parse(text: str, tmp_path: Path) -> object:
    return parse_config(text, base_dir=tmp_path)


def error(text: str, tmp_path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, base_dir=tmp_path)
    return info.value


def test_minimal_config_gets_the_documented_defaults(tmp_path: Path) -> None:
    config = parse_config(MINIMAL, base_dir=tmp_path)
    assert config.listen.max_body_bytes == 64 * 1024 * 1024
    assert config.listen.path == "/webhooks/snyk"
    assert config.state_dir == tmp_path / "state"
    (output,) = config.outputs
    assert output.settings.path == tmp_path / "out.jsonl"
    assert output.delivery.retry_max_attempts == 0  # retry forever by default


def test_the_shipped_configs_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNYK_WEBHOOK_SECRET", "example-secret-from-env")
    credentials = tmp_path / "credentials"  # what systemd's LoadCredential= provides (config/systemd.toml)
    credentials.mkdir()
    (credentials / "webhook-secret").write_text("example-secret-from-systemd\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    monkeypatch.chdir(tmp_path)
    assert (REPO / "config" / "quickstart.toml").read_text() == TEXT
    LocalCA(tmp_path / "tls")  # writes tls/server.pem and tls/server.key, a matching pair
    for path in sorted((REPO / "config").glob("*.toml")):
        copy = tmp_path / path.name
        copy.write_text(path.read_text())
        config = load_config(copy)
        assert config.outputs, path


def test_embedded_default_generates_a_secret_once(tmp_path: Path) -> None:
    first = embedded_config(tmp_path)
    second = embedded_config(tmp_path)
    secret = (tmp_path / "state" / "webhook-secret").read_text().strip()
    assert len(secret) >= 32
    assert first.webhook.secrets[0].reveal() == second.webhook.secrets[0].reveal() == secret
    assert (tmp_path / "state" / "webhook-secret").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    ("secret", "key"),
    [
        ('secret = ""', "webhook.secret"),
        ('secret = "   "', "webhook.secret"),
        ('secret = { env = "SNYK_FWD_TEST_UNSET" }', "webhook.secret.env"),
        ('secret = { env = "SNYK_FWD_TEST_EMPTY" }', "webhook.secret"),
        ('secret = { file = "missing.txt" }', "webhook.secret"),
        ("", "webhook.secret"),
    ],
)
def test_c03_empty_or_missing_secret_is_a_startup_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret: str, key: str
) -> None:
    monkeypatch.delenv("SNYK_FWD_TEST_UNSET", raising=False)
    monkeypatch.setenv("SNYK_FWD_TEST_EMPTY", "")
    exc = error(MINIMAL.replace('secret = "s3cret-value"', secret), tmp_path)
    assert exc.key == key
    assert exc.hint


def test_secrets_from_env_file_and_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "secret.txt").write_text("from-a-file\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "webhook").write_text("from-systemd")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.setenv("OLD_SECRET", "from-env")
    for spec, value in [
        ('{ env = "OLD_SECRET" }', "from-env"),
        ('{ file = "secret.txt" }', "from-a-file"),
        ('{ credential = "webhook" }', "from-systemd"),
    ]:
        config = parse_config(MINIMAL.replace('"s3cret-value"', spec), base_dir=tmp_path)
        assert config.webhook.secrets[0].reveal() == value
        assert value not in repr(config)


def test_two_secrets_for_rotation_but_not_three_and_not_twice_the_same(tmp_path: Path) -> None:
    two = MINIMAL.replace('secret = "s3cret-value"', 'secrets = ["old-secret", "new-secret"]')
    assert len(parse_config(two, base_dir=tmp_path).webhook.secrets) == 2
    assert error(two.replace('"new-secret"]', '"new-secret", "third"]'), tmp_path).key == "webhook.secrets"
    assert error(two.replace('"new-secret"', '"old-secret"'), tmp_path).key == "webhook.secrets"


@pytest.mark.parametrize(
    ("change", "key", "fix"),
    [
        (
            ("max_body_bytes", "[listen]\nmax_body_byte = 5\nplain_http = true"),
            "listen.max_body_byte",
            "did you mean `max_body_bytes`?",
        ),
        (
            ('path = "out.jsonl"', 'path = "out.jsonl"\nbatch_max_records = "lots"'),
            "outputs.local.batch_max_records",
            "number",
        ),
        (('type = "file"', 'type = "splunk"'), "outputs.local.type", "one of"),
        (("[listen]\nplain_http = true", "[listen]"), "listen.tls_cert", "tls_self_signed"),
        (
            ('path = "out.jsonl"', 'path = "out.jsonl"\nmin_severity = "severe"'),
            "outputs.local.min_severity",
            "low, medium, high, critical",
        ),
        (
            ('path = "out.jsonl"', 'path = "out.jsonl"\nretry_initial_backoff = "soon"'),
            "outputs.local.retry_initial_backoff",
            '"10s"',
        ),
    ],
)
def test_mistakes_name_the_key_and_the_fix(tmp_path: Path, change: tuple[str, str], key: str, fix: str) -> None:
    old, new = change
    text = MINIMAL.replace("[listen]\nplain_http = true", new) if old == "max_body_bytes" else MINIMAL.replace(old, new)
    exc = error(text, tmp_path)
    assert exc.key == key
    assert fix in exc.render()


def test_durations_and_sizes_accept_units(tmp_path: Path) -> None:
    text = MINIMAL.replace("plain_http = true", 'plain_http = true\nmax_body_bytes = "10MiB"\nbody_timeout = "2m"')
    config = parse_config(text, base_dir=tmp_path)
    assert config.listen.max_body_bytes == 10 * 1024 * 1024
    assert config.listen.body_timeout == 120.0


def test_syslog_endpoint_forms(tmp_path: Path) -> None:
    base = MINIMAL.replace('type = "file"\npath = "out.jsonl"', 'type = "syslog"\nendpoint = "{}"')
    for endpoint, expected in [("siem.example.com:6514", ("siem.example.com", 6514)), ("[::1]:514", ("::1", 514))]:
        settings = parse_config(base.replace("{}", endpoint), base_dir=tmp_path).outputs[0].settings
        assert (settings.host, settings.port) == expected
    for bad in ["siem.example.com", "host:99999", "[::1"]:
        assert error(base.replace("{}", bad), tmp_path).key == "outputs.local.endpoint"


def test_check_config_cli_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text(MINIMAL)
    assert main(["check-config", "--config", str(good)]) == 0
    assert "OK" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text(MINIMAL.replace('secret = "s3cret-value"', 'secret = ""'))
    assert main(["check-config", "--config", str(bad)]) == 78
    err = capsys.readouterr().err
    assert str(bad) in err and "webhook.secret" in err and "fix:" in err
    assert main(["check-config", "--config", str(tmp_path / "nope.toml")]) == 78


def test_invalid_toml_points_at_the_line(tmp_path: Path) -> None:
    exc = error("[listen\nport = 1", tmp_path)
    assert "line 1" in exc.render()


SYSLOG = MINIMAL.replace('type = "file"\npath = "out.jsonl"', 'type = "syslog"\nendpoint = "siem.example.com:6514"\n{}')


def test_syslog_defaults_follow_the_protocol(tmp_path: Path) -> None:
    five = parse_config(SYSLOG.replace("{}", ""), base_dir=tmp_path).outputs[0].settings
    bsd = parse_config(SYSLOG.replace("{}", 'protocol = "rfc3164"'), base_dir=tmp_path).outputs[0].settings
    assert (five.max_message_bytes, bsd.max_message_bytes) == (8096, 1024)
    assert five.transport == "tcp" and five.framing == "octet-counting" and five.tls_verify
    assert five.severity_map == {"critical": 2, "high": 3, "medium": 4, "low": 5, "none": 6}


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ('transport = "udp"\nframing = "lf"', "outputs.local.framing"),
        ('tls_ca_file = "ca.pem"', "outputs.local.tls_ca_file"),
        ('transport = "tls"\ntls_client_cert = "c.pem"', "outputs.local.tls_client_key"),
        ('transport = "tls"\ntls_ca_file = "missing.pem"', "outputs.local.tls_ca_file"),
        ('transport = "udp"\nmax_message_bytes = 70000', "outputs.local.max_message_bytes"),
        ('sd_id = "has space"', "outputs.local.sd_id"),
        ('format = "xml"', "outputs.local.format"),
        ('format = "leef"\nleef_delimiter = "||"', "outputs.local.leef_delimiter"),
        ('[outputs.local.severity_map]\nhigh = "severe"', "outputs.local.severity_map.high"),
    ],
)
def test_syslog_mistakes_name_the_key(tmp_path: Path, extra: str, key: str) -> None:
    assert error(SYSLOG.replace("{}", extra), tmp_path).key == key


def test_tls_syslog_with_mutual_tls_and_leef(tmp_path: Path) -> None:
    for name in ("ca.pem", "c.pem", "k.pem"):
        (tmp_path / name).write_text("-")
    extra = (
        'transport = "tls"\ntls_ca_file = "ca.pem"\ntls_client_cert = "c.pem"\ntls_client_key = "k.pem"\n'
        'format = "leef"\nleef_delimiter = "^"\nframing = "lf"'
    )
    output = parse_config(SYSLOG.replace("{}", extra), base_dir=tmp_path).outputs[0]
    assert output.settings.tls_client_cert == tmp_path / "c.pem"
    assert output.delivery.format == "leef" and output.delivery.leef_delimiter == "^"


@pytest.mark.parametrize(
    ("change", "key", "fix"),
    [
        (("[webhook]", "[webhooks]"), "webhooks", "did you mean `webhook`?"),
        (('secret = "s3cret-value"', 'secert = "s3cret-value"'), "webhook.secert", "did you mean `secret`?"),
        (('secret = "s3cret-value"', 'secret = ""'), "webhook.secret", "openssl rand -hex 32"),
        (("[listen]\nplain_http = true", '[listen]\nplain_http = true\nport = "8443"'), "listen.port", "port = 8443"),
        (
            ("[listen]\nplain_http = true", "[listen]\nplain_http = true\nport = 9700\n[admin]\nport = 9700"),
            "admin.port",
            "own port",
        ),
    ],
)
def test_messages_point_at_the_likely_fix(tmp_path: Path, change: tuple[str, str], key: str, fix: str) -> None:
    exc = error(MINIMAL.replace(*change), tmp_path)
    assert exc.key == key
    assert fix in exc.render()


def test_a_missing_section_says_add_the_section(tmp_path: Path) -> None:
    text = MINIMAL.replace('[webhook]\nsecret = "s3cret-value"', "")
    assert "add a [webhook] section" in error(text, tmp_path).render()


def test_an_unknown_severity_map_key_lists_the_valid_ones(tmp_path: Path) -> None:
    text = SYSLOG.format('[outputs.local.severity_map]\ncritcal = "alert"')
    exc = error(text, tmp_path)
    assert exc.key == "outputs.local.severity_map.critcal"
    assert "did you mean `critical`?" in exc.render() and "high, low, medium" in exc.render()


def test_file_output_paths_are_checked_before_the_daemon_starts(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    under_a_file = MINIMAL.replace('path = "out.jsonl"', 'path = "a-file/out.jsonl"')
    assert "a-file is a file" in error(under_a_file, tmp_path).render()
    a_directory = MINIMAL.replace('path = "out.jsonl"', f'path = "{tmp_path}"')
    assert "is a directory" in error(a_directory, tmp_path).render()
    into_the_buffer = MINIMAL.replace('path = "out.jsonl"', 'path = "state/buffer.db"')
    assert "forwarder's own files" in error(into_the_buffer, tmp_path).render()
    twice = MINIMAL + '\n[outputs.copy]\ntype = "file"\npath = "out.jsonl"\n'
    exc = error(twice, tmp_path)
    assert exc.key == "outputs.copy.path" and "outputs.local.path" in exc.render()


def test_a_certificate_and_a_key_that_do_not_match_fail_check_config(tmp_path: Path) -> None:
    first, second = LocalCA(tmp_path / "a"), LocalCA(tmp_path / "b")
    listen = f'[listen]\ntls_cert = "{first.cert_file}"\ntls_key = "{second.key_file}"'
    exc = error(MINIMAL.replace("[listen]\nplain_http = true", listen), tmp_path)
    assert exc.key == "listen.tls_key" and "does not go with the certificate" in exc.render()
    good = f'[listen]\ntls_cert = "{first.cert_file}"\ntls_key = "{first.key_file}"'
    assert parse_config(MINIMAL.replace("[listen]\nplain_http = true", good), base_dir=tmp_path).listen.tls_key


def test_a_misspelt_required_key_is_named(tmp_path: Path) -> None:
    exc = error(SYSLOG.format("").replace("endpoint =", "endpont ="), tmp_path)
    assert exc.key == "outputs.local.endpoint" and "rename `endpont` to `endpoint`" in exc.render()
