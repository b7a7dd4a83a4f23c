"""``snyk-forwarder snyk …`` against the fake Snyk v1 API (tests/support/snyk_api.py) over HTTPS.

Every command runs in-process through ``forwarder.cli.main``; the fake and a small webhook receiver use
a trustme CA that the CLI is given with ``--cacert``. The ``cli`` fixture asserts on every run that
neither the API token nor a webhook secret was printed.
"""

from __future__ import annotations

import io
import json
import random
import ssl
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from forwarder import cli_snyk
from forwarder.backoff import Backoff
from forwarder.cli import _parser, main
from forwarder.config.secrets import Secret
from forwarder.receiver.verify import Verifier
from forwarder.snyk_api import REGIONS, SnykApiError, SnykClient, parse_retry_after
from tests.support.daemon import LocalCA
from tests.support.https_target import HttpsTarget
from tests.support.ports import LOOPBACK, free_port
from tests.support.snyk_api import FakeSnykApi, ScriptedReply, TokenGrant, error_body

ORG = "4a18d42f-0706-4ad0-b127-24078731fbed"
OTHER_ORG = "39db46b1-ad57-47e6-a87d-e34f6968030b"
TOKEN = "tok-admin-7f3a9c1e5b2d4f60"
OLD_SECRET = "whsec-old-0a1b2c3d4e5f60718293a4b5"
NEW_SECRET = "whsec-new-f9e8d7c6b5a4938271605f4e"
NEVER_PRINTED = (TOKEN, OLD_SECRET, NEW_SECRET)
WAIT = 5.0


# -- fixtures ---------------------------------------------------------------------------------------------------


Pki = LocalCA  # a CA and a server certificate for 127.0.0.1, ::1 and localhost


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return LocalCA(tmp_path_factory.mktemp("snyk-cli-pki"))


@pytest.fixture
def receiver(pki: Pki) -> Iterator[HttpsTarget]:
    with HttpsTarget(pki.cert_file, pki.key_file, "/webhooks/snyk") as r:
        yield r


def make_api(pki: Pki, **kwargs: Any) -> FakeSnykApi:
    return FakeSnykApi(
        pki.cert_file,
        pki.key_file,
        tokens={TOKEN: TokenGrant(frozenset({ORG}))},
        delivery_ca_file=pki.ca_file,
        **kwargs,
    )


@pytest.fixture
def api(pki: Pki) -> Iterator[FakeSnykApi]:
    with make_api(pki) as fake:
        yield fake


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "forwarder.toml"
    path.write_text(
        "[listen]\nplain_http = true\n\n"
        f'[webhook]\nsecrets = ["{OLD_SECRET}", "{NEW_SECRET}"]\n\n'
        '[outputs.local]\ntype = "file"\npath = "records.jsonl"\n',
        encoding="utf-8",
    )
    return path


@pytest.fixture(autouse=True)
def _token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNYK_TOKEN", TOKEN)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal unless a test says so


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


Cli = Callable[..., Run]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    def run(*argv: str) -> Run:
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse usage errors
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        for secret in NEVER_PRINTED:
            assert secret not in out and secret not in err, f"a secret was printed: {out!r} {err!r}"
        return Run(code, out, err)

    return run


def snyk(api: FakeSnykApi, pki: Pki, command: str, *extra: str, org: str = ORG) -> list[str]:
    return ["snyk", command, "--org", org, "--api-url", api.base_url, "--cacert", str(pki.ca_file), *extra]


def methods(api: FakeSnykApi) -> list[tuple[str, int | None]]:
    return [(r.method, r.status) for r in api.requests()]


# -- list --------------------------------------------------------------------------------------------------------


def test_list_prints_a_table_and_json(api: FakeSnykApi, pki: Pki, cli: Cli) -> None:
    first = api.add_webhook(ORG, "https://siem.example.com/webhooks/snyk", OLD_SECRET)
    second = api.add_webhook(ORG, "https://siem.example.com/webhooks/snyk?rotation=2", NEW_SECRET)

    table = cli(*snyk(api, pki, "list"))
    assert table.code == 0, table.err
    lines = table.out.splitlines()
    assert lines[0].split() == ["ID", "URL"]
    assert [line.split() for line in lines[1:]] == [[first.id, first.url], [second.id, second.url]]

    as_json = cli(*snyk(api, pki, "list", "--json"))
    assert as_json.code == 0
    assert json.loads(as_json.out) == [{"id": first.id, "url": first.url}, {"id": second.id, "url": second.url}]
    [request, _] = api.requests()
    assert request.method == "GET" and request.path == f"/v1/org/{ORG}/webhooks"
    assert request.header("Authorization") == f"token {TOKEN}"


def test_list_of_an_org_without_webhooks(api: FakeSnykApi, pki: Pki, cli: Cli) -> None:
    run = cli(*snyk(api, pki, "list"))
    assert run.code == 0
    assert run.out == f"org {ORG} has no webhooks\n"
    assert json.loads(cli(*snyk(api, pki, "list", "--json")).out) == []


# -- create ------------------------------------------------------------------------------------------------------


def test_create_registers_the_config_secret_and_its_ping_verifies(
    api: FakeSnykApi, pki: Pki, cli: Cli, config_file: Path, receiver: HttpsTarget
) -> None:
    run = cli(*snyk(api, pki, "create", "--url", receiver.url, "--config", str(config_file)))

    assert run.code == 0, run.err
    [hook] = api.webhooks(ORG)
    assert hook.url == receiver.url and hook.secret == OLD_SECRET
    assert f"created webhook {hook.id} for {receiver.url}" in run.out
    assert "ping/v0" in run.out and "webhook secret 1" in run.out
    assert "127.0.0.1 is not a public address" in run.err
    assert [(r.method, r.path) for r in api.requests()] == [
        ("GET", f"/v1/org/{ORG}/webhooks"),
        ("POST", f"/v1/org/{ORG}/webhooks"),
    ]
    assert api.requests()[1].json == {"url": receiver.url, "secret": OLD_SECRET}

    [ping] = receiver.wait(1)
    assert json.loads(ping.body) == {"webhookId": hook.id}
    assert ping.headers["x-snyk-event"] == "ping/v0"
    # The daemon's own check: the first configured secret matches.
    assert Verifier([OLD_SECRET, NEW_SECRET]).match(ping.headers["x-hub-signature"].encode(), ping.body) == 0


def test_create_with_secret_index_2_registers_the_new_secret(
    api: FakeSnykApi, pki: Pki, cli: Cli, config_file: Path, receiver: HttpsTarget
) -> None:
    args = ("--url", receiver.url, "--config", str(config_file), "--secret-index", "2")
    run = cli(*snyk(api, pki, "create", *args))

    assert run.code == 0, run.err
    assert [h.secret for h in api.webhooks(ORG)] == [NEW_SECRET]
    [ping] = receiver.wait(1)
    assert Verifier([OLD_SECRET, NEW_SECRET]).match(ping.headers["x-hub-signature"].encode(), ping.body) == 1
    assert Verifier([OLD_SECRET]).match(ping.headers["x-hub-signature"].encode(), ping.body) is None


def test_secret_index_beyond_the_configured_secrets_is_a_config_error(
    api: FakeSnykApi, pki: Pki, cli: Cli, config_file: Path
) -> None:
    args = ("--url", "https://siem.example.com/webhooks/snyk", "--config", str(config_file), "--secret-index", "3")
    run = cli(*snyk(api, pki, "create", *args))

    assert run.code == 78
    assert "webhook.secrets" in run.err and "--secret-index 3" in run.err and "fix:" in run.err
    assert api.requests() == []


@pytest.mark.parametrize("source", ["env", "file"])
def test_create_with_secret_from_env_or_file(
    api: FakeSnykApi, pki: Pki, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    if source == "env":
        monkeypatch.setenv("NEW_WEBHOOK_SECRET", NEW_SECRET)
        option = ("--secret-env", "NEW_WEBHOOK_SECRET")
    else:
        (tmp_path / "secret").write_text(NEW_SECRET + "\n", encoding="utf-8")
        option = ("--secret-file", str(tmp_path / "secret"))

    run = cli(*snyk(api, pki, "create", "--url", "https://siem.example.com/webhooks/snyk", *option))

    assert run.code == 0, run.err
    assert [h.secret for h in api.webhooks(ORG)] == [NEW_SECRET]
    assert option[0] in run.out  # says where the secret came from, not what it is


def test_secret_index_with_secret_env_is_a_usage_error(api: FakeSnykApi, pki: Pki, cli: Cli) -> None:
    args = ("--url", "https://a.example/hook", "--secret-env", "SNYK_TOKEN", "--secret-index", "2")
    run = cli(*snyk(api, pki, "create", *args))

    assert run.code == 2 and "--secret-index" in run.err
    assert api.requests() == []


def test_missing_secret_env_is_a_config_error_naming_the_option(api: FakeSnykApi, pki: Pki, cli: Cli) -> None:
    run = cli(*snyk(api, pki, "create", "--url", "https://a.example/hook", "--secret-env", "NOT_SET_ANYWHERE"))

    assert run.code == 78
    assert "--secret-env" in run.err and "NOT_SET_ANYWHERE is not set" in run.err
    assert api.requests() == []


def test_create_without_config_uses_the_built_in_configuration_secret(
    api: FakeSnykApi, pki: Pki, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = "https://siem.example.com/webhooks/snyk"

    refused = cli(*snyk(api, pki, "create", "--url", url))
    assert refused.code == 78
    assert "--config: is not given" in refused.err and str(tmp_path / "state" / "webhook-secret") in refused.err
    assert not (tmp_path / "state").exists()  # no secret generated that no forwarder holds
    assert api.requests() == []

    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "webhook-secret").write_text(OLD_SECRET + "\n", encoding="utf-8")
    run = cli(*snyk(api, pki, "create", "--url", url))
    assert run.code == 0, run.err
    assert [h.secret for h in api.webhooks(ORG)] == [OLD_SECRET]
    assert "<embedded default>" in run.out


def test_create_is_idempotent(api: FakeSnykApi, pki: Pki, cli: Cli, config_file: Path) -> None:
    existing = api.add_webhook(ORG, "https://siem.example.com/webhooks/snyk", OLD_SECRET)

    run = cli(*snyk(api, pki, "create", "--url", existing.url, "--config", str(config_file)))

    assert run.code == 0, run.err
    assert f"webhook {existing.id} of org {ORG} already sends to {existing.url}; nothing created" in run.out
    assert "--force" in run.out
    assert [r.method for r in api.requests()] == ["GET"]
    assert api.webhooks(ORG) == [existing]


def test_force_creates_a_second_webhook_for_the_same_url(
    api: FakeSnykApi, pki: Pki, cli: Cli, config_file: Path
) -> None:
    existing = api.add_webhook(ORG, "https://siem.example.com/webhooks/snyk", OLD_SECRET)
    args = ("--url", existing.url, "--config", str(config_file), "--secret-index", "2", "--force")

    run = cli(*snyk(api, pki, "create", *args))

    assert run.code == 0, run.err
    old, new = api.webhooks(ORG)
    assert old == existing and new.url == existing.url and new.secret == NEW_SECRET
    assert f"created webhook {new.id}" in run.out
    assert existing.id in run.err and "twice" in run.err


def test_force_when_snyk_refuses_duplicate_urls_says_how_to_proceed(
    pki: Pki, cli: Cli, config_file: Path, receiver: HttpsTarget
) -> None:
    with make_api(pki, refuse_duplicate_urls=True) as api:
        existing = api.add_webhook(ORG, receiver.url, OLD_SECRET)
        common = ("--config", str(config_file), "--secret-index", "2", "--force")

        refused = cli(*snyk(api, pki, "create", "--url", receiver.url, *common))

        assert refused.code == 1
        assert "422" in refused.err and "distinct URL" in refused.err
        suggested = receiver.url + "?rotation=2"
        assert suggested in refused.err
        assert api.webhooks(ORG) == [existing]

        accepted = cli(*snyk(api, pki, "create", "--url", suggested, *common))
        assert accepted.code == 0, accepted.err
        assert [h.url for h in api.webhooks(ORG)] == [receiver.url, suggested]
        [ping] = receiver.wait(1)
        assert Verifier([OLD_SECRET, NEW_SECRET]).match(ping.headers["x-hub-signature"].encode(), ping.body) == 1


@pytest.mark.parametrize("url", ["http://siem.example.com/webhooks/snyk", "ftp://siem.example.com/x", "siem/x"])
def test_create_refuses_urls_that_are_not_https(api: FakeSnykApi, pki: Pki, cli: Cli, url: str) -> None:
    run = cli(*snyk(api, pki, "create", "--url", url))

    assert run.code == 2
    assert "argument --url" in run.err and "https://" in run.err
    assert api.requests() == []


def test_a_post_refused_with_429_is_sent_again_and_creates_one_webhook(
    api: FakeSnykApi, pki: Pki, cli: Cli, config_file: Path
) -> None:
    api.script(ScriptedReply(429, error_body(429, "Too many requests"), {"Retry-After": "0"}), method="POST")

    run = cli(
        *snyk(api, pki, "create", "--url", "https://siem.example.com/webhooks/snyk", "--config", str(config_file))
    )

    assert run.code == 0, run.err
    assert methods(api) == [("GET", 200), ("POST", 429), ("POST", 200)]
    assert len(api.webhooks(ORG)) == 1


# -- delete ------------------------------------------------------------------------------------------------------


def test_delete_by_id_and_by_url(api: FakeSnykApi, pki: Pki, cli: Cli) -> None:
    first = api.add_webhook(ORG, "https://siem.example.com/webhooks/snyk", OLD_SECRET)
    second = api.add_webhook(ORG, "https://siem.example.com/webhooks/snyk?rotation=2", NEW_SECRET)

    by_id = cli(*snyk(api, pki, "delete", "--id", first.id, "--yes"))
    assert by_id.code == 0, by_id.err
    assert by_id.out == f"deleted webhook {first.id} of org {ORG}\n"
    assert api.webhooks(ORG) == [second]

    by_url = cli(*snyk(api, pki, "delete", "--url", second.url, "-y"))
    assert by_url.code == 0, by_url.err
    assert by_url.out == f"deleted webhook {second.id} ({second.url}) of org {ORG}\n"
    assert api.webhooks(ORG) == []
    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in api.requests()] == [
        ("DELETE", first.id),
        ("GET", "webhooks"),
        ("DELETE", second.id),
    ]


def test_delete_without_yes_and_without_a_terminal_is_refused(api: FakeSnykApi, pki: Pki, cli: Cli) -> None:
    hook = api.add_webhook(ORG, "https://siem.example.com/webhooks/snyk", OLD_SECRET)

    run = cli(*snyk(api, pki, "delete", "--id", hook.id))

    assert run.code == 2
    assert "--yes" in run.err
    assert api.requests() == [] and api.webhooks(ORG) == [hook]


class TtyInput(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("answer", "deleted"), [("y\n", True), ("yes\n", True), ("\n", False), ("n\n", False)])
def test_delete_asks_on_a_terminal(
    api: FakeSnykApi, pki: Pki, cli: Cli, monkeypatch: pytest.MonkeyPatch, answer: str, deleted: bool
) -> None:
    hook = api.add_webhook(ORG, "https://siem.example.com/webhooks/snyk", OLD_SECRET)
    monkeypatch.setattr("sys.stdin", TtyInput(answer))

    run = cli(*snyk(api, pki, "delete", "--id", hook.id))

    assert f"Delete webhook {hook.id} ({hook.url}) of org {ORG}? [y/N]" in run.err
    if deleted:
        assert run.code == 0 and api.webhooks(ORG) == []
    else:
        assert run.code == 1 and "nothing deleted" in run.err
        assert api.webhooks(ORG) == [hook]
        assert [r.method for r in api.requests()] == ["GET"]


def test_delete_by_url_needs_exactly_one_match(api: FakeSnykApi, pki: Pki, cli: Cli) -> None:
    url = "https://siem.example.com/webhooks/snyk"
    one, two = api.add_webhook(ORG, url, OLD_SECRET), api.add_webhook(ORG, url, NEW_SECRET)

    ambiguous = cli(*snyk(api, pki, "delete", "--url", url, "--yes"))
    assert ambiguous.code == 1
    assert one.id in ambiguous.err and two.id in ambiguous.err and "--id" in ambiguous.err

    unknown = cli(*snyk(api, pki, "delete", "--url", url + "/other", "--yes"))
    assert unknown.code == 1 and "0 webhooks" in unknown.err
    assert api.webhooks(ORG) == [one, two]
    assert {r.method for r in api.requests()} == {"GET"}


# -- ping --------------------------------------------------------------------------------------------------------


def test_ping_sends_a_delivery_signed_with_the_stored_secret(
    api: FakeSnykApi, pki: Pki, cli: Cli, receiver: HttpsTarget
) -> None:
    hook = api.add_webhook(ORG, receiver.url, NEW_SECRET)

    run = cli(*snyk(api, pki, "ping", "--id", hook.id))

    assert run.code == 0, run.err
    assert hook.id in run.out and "ping/v0" in run.out
    [ping] = receiver.wait(1)
    assert json.loads(ping.body) == {"webhookId": hook.id}
    assert Verifier([OLD_SECRET, NEW_SECRET]).match(ping.headers["x-hub-signature"].encode(), ping.body) == 1
    assert [(r.method, r.path) for r in api.requests()] == [("POST", f"/v1/org/{ORG}/webhooks/{hook.id}/ping")]


def test_ping_of_an_unknown_webhook_points_at_list(api: FakeSnykApi, pki: Pki, cli: Cli) -> None:
    missing = str(uuid.uuid4())

    run = cli(*snyk(api, pki, "ping", "--id", missing))

    assert run.code == 1
    assert "404" in run.err and missing in run.err and f"snyk list --org {ORG}" in run.err


# -- tokens, permissions, orgs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["list", "ping", "delete"])
def test_bad_token_names_the_option_and_never_the_token(
    api: FakeSnykApi, pki: Pki, cli: Cli, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    wrong = "tok-wrong-3c9e1f0a2b7d"
    monkeypatch.setenv("SNYK_TOKEN", wrong)
    extra = {"list": (), "ping": ("--id", "x"), "delete": ("--id", "x", "--yes")}[command]

    run = cli(*snyk(api, pki, command, *extra))

    assert run.code == 1
    assert run.err.startswith("error: Snyk refused the API token from --token-env SNYK_TOKEN (401")
    assert "fix:" in run.err and "Snyk error reference" in run.err
    assert wrong not in run.out + run.err
    assert api.requests()[0].header("Authorization") == f"token {wrong}"


def test_bad_token_from_a_file_names_that_file(api: FakeSnykApi, pki: Pki, cli: Cli, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("tok-wrong-file-55aa\n", encoding="utf-8")

    run = cli(*snyk(api, pki, "list", "--token-file", str(token_file)))

    assert run.code == 1
    assert f"--token-file {token_file}" in run.err and "401" in run.err
    assert "tok-wrong-file-55aa" not in run.err


def test_missing_token_is_a_config_error_naming_option_and_fix(
    api: FakeSnykApi, pki: Pki, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SNYK_TOKEN")

    run = cli(*snyk(api, pki, "list"))

    assert run.code == 78
    assert run.err.startswith("configuration error: --token-env: environment variable SNYK_TOKEN is not set")
    assert "fix: export SNYK_TOKEN=" in run.err and "--token-file" in run.err
    assert api.requests() == []


def test_token_from_a_file_or_a_systemd_credential(
    api: FakeSnykApi, pki: Pki, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SNYK_TOKEN")
    (tmp_path / "snyk-token").write_text(TOKEN + "\n", encoding="utf-8")

    assert cli(*snyk(api, pki, "list", "--token-file", str(tmp_path / "snyk-token"))).code == 0
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert cli(*snyk(api, pki, "list", "--token-credential", "snyk-token")).code == 0
    assert [r.header("Authorization") for r in api.requests()] == [f"token {TOKEN}"] * 2


def test_missing_permission_names_the_roles(
    api: FakeSnykApi, pki: Pki, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.add_token("tok-viewer-9d8c", [ORG], create=False, delete=False)
    monkeypatch.setenv("SNYK_TOKEN", "tok-viewer-9d8c")

    run = cli(*snyk(api, pki, "create", "--url", "https://siem.example.com/webhooks/snyk", "--secret-env", "X_SECRET"))
    assert run.code == 78  # the secret is checked before any request
    monkeypatch.setenv("X_SECRET", NEW_SECRET)
    run = cli(*snyk(api, pki, "create", "--url", "https://siem.example.com/webhooks/snyk", "--secret-env", "X_SECRET"))

    assert run.code == 1
    assert "403" in run.err and "Create Outbound Webhooks" in run.err
    assert "Org Admin" in run.err and "Group Admin" in run.err
    assert api.webhooks(ORG) == []


def test_unknown_org_says_check_org_and_region(api: FakeSnykApi, pki: Pki, cli: Cli) -> None:
    run = cli(*snyk(api, pki, "list", org=OTHER_ORG))

    assert run.code == 1
    assert "404" in run.err and OTHER_ORG in run.err
    assert "--org" in run.err and "--region" in run.err


# -- rate limits and failures ------------------------------------------------------------------------------------


def test_429_then_success(api: FakeSnykApi, pki: Pki, cli: Cli) -> None:
    hook = api.add_webhook(ORG, "https://siem.example.com/webhooks/snyk", OLD_SECRET)
    api.throttle_next(2, retry_after=0)

    run = cli(*snyk(api, pki, "list", "--json"))

    assert run.code == 0, run.err
    assert json.loads(run.out) == [{"id": hook.id, "url": hook.url}]
    assert methods(api) == [("GET", 429), ("GET", 429), ("GET", 200)]
    assert run.err.count("rate limit (429)") == 2


def test_429_forever_fails_clearly_after_a_few_attempts(
    api: FakeSnykApi, pki: Pki, cli: Cli, config_file: Path
) -> None:
    api.throttle_next(50, retry_after=0)

    run = cli(
        *snyk(api, pki, "create", "--url", "https://siem.example.com/webhooks/snyk", "--config", str(config_file))
    )

    assert run.code == 1
    assert "kept answering 429 Too Many Requests" in run.err and "4 attempts" in run.err
    assert "wait a minute" in run.err
    assert methods(api) == [("GET", 429)] * 4  # the create was never attempted
    assert api.webhooks(ORG) == []


def test_429_asking_for_a_long_wait_fails_at_once(api: FakeSnykApi, pki: Pki, cli: Cli) -> None:
    api.throttle_next(1, retry_after=3600)

    run = cli(*snyk(api, pki, "list"))

    assert run.code == 1
    assert "asks to wait 3600 s" in run.err
    assert methods(api) == [("GET", 429)]


def test_429_without_retry_after_backs_off_exponentially(api: FakeSnykApi, pki: Pki) -> None:
    api.throttle_next(3)
    slept: list[float] = []
    verify = ssl.create_default_context(cafile=str(pki.ca_file))
    backoff = Backoff(base=1.0, cap=3.0, rng=random.Random(7))
    with SnykClient(api.base_url, Secret("test", TOKEN), verify=verify, backoff=backoff, sleep=slept.append) as c:
        assert c.list_webhooks(ORG) == []

    assert len(slept) == 3
    for delay, step in zip(slept, (1.0, 2.0, 3.0), strict=True):  # 1, 2, then capped at 3
        assert step / 2 <= delay <= step


def test_server_error_is_reported_with_its_reference_and_not_retried(api: FakeSnykApi, pki: Pki, cli: Cli) -> None:
    api.script(ScriptedReply(503, headers={"x-error-reference": "ref-1234"}))

    run = cli(*snyk(api, pki, "list"))

    assert run.code == 1
    assert "503" in run.err and "Snyk error reference ref-1234" in run.err and "try again later" in run.err
    assert len(api.requests()) == 1


def test_untrusted_certificate_suggests_cacert(api: FakeSnykApi, cli: Cli) -> None:
    run = cli("snyk", "list", "--org", ORG, "--api-url", api.base_url)

    assert run.code == 1
    assert "TLS failed" in run.err and "CERTIFICATE_VERIFY_FAILED" in run.err and "--cacert" in run.err


def test_connection_refused_is_a_network_error(cli: Cli, pki: Pki) -> None:
    url = f"https://{LOOPBACK}:{free_port()}/v1/"

    run = cli("snyk", "list", "--org", ORG, "--api-url", url, "--cacert", str(pki.ca_file))

    assert run.code == 1
    assert run.err.startswith(f"error: cannot connect to {url}") and "--region" in run.err


def test_unreadable_cacert_is_a_config_error(api: FakeSnykApi, cli: Cli, tmp_path: Path) -> None:
    run = cli("snyk", "list", "--org", ORG, "--api-url", api.base_url, "--cacert", str(tmp_path / "nope.pem"))

    assert run.code == 78 and "--cacert" in run.err
    assert api.requests() == []


# -- API URL and regions -----------------------------------------------------------------------------------------


def test_plain_http_api_url_is_refused_except_on_loopback(pki: Pki, cli: Cli) -> None:
    refused = cli("snyk", "list", "--org", ORG, "--api-url", "http://api.snyk.io/v1/")
    assert refused.code == 2 and "unencrypted" in refused.err

    with FakeSnykApi(plain_http=True, tokens={TOKEN: TokenGrant(frozenset({ORG}))}) as plain:
        assert plain.base_url.startswith("http://127.0.0.1:")
        allowed = cli("snyk", "list", "--org", ORG, "--api-url", plain.base_url)
        assert allowed.code == 0, allowed.err
        assert [r.path for r in plain.requests()] == [f"/v1/org/{ORG}/webhooks"]


def test_regions_match_the_notes() -> None:
    assert {k: (r.name, r.api_url) for k, r in REGIONS.items()} == {
        "us": ("SNYK-US-01", "https://api.snyk.io/v1/"),
        "us2": ("SNYK-US-02", "https://api.us.snyk.io/v1/"),
        "eu": ("SNYK-EU-01", "https://api.eu.snyk.io/v1/"),
        "au": ("SNYK-AU-01", "https://api.au.snyk.io/v1/"),
    }
    assert tuple(REGIONS) == cli_snyk.REGION_CHOICES


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ((), "https://api.snyk.io/v1/"),
        (("--region", "us2"), "https://api.us.snyk.io/v1/"),
        (("--region", "eu"), "https://api.eu.snyk.io/v1/"),
        (("--region", "au"), "https://api.au.snyk.io/v1/"),
        (("--api-url", "https://snyk-proxy.internal/v1"), "https://snyk-proxy.internal/v1/"),
    ],
)
def test_region_selects_the_base_url(options: tuple[str, ...], expected: str) -> None:
    args = _parser().parse_args(["snyk", "list", "--org", ORG, *options])
    with cli_snyk._client(args) as client:
        assert client.base_url == expected


def test_snyk_without_a_subcommand_is_a_usage_error(cli: Cli) -> None:
    run = cli("snyk")
    assert run.code == 2 and "COMMAND" in run.err


# -- the client's error table ------------------------------------------------------------------------------------


def mock_client(handler: Callable[[httpx.Request], httpx.Response]) -> SnykClient:
    return SnykClient(
        "https://api.snyk.io/v1/", Secret("--token-env SNYK_TOKEN", TOKEN), transport=httpx.MockTransport(handler)
    )


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid"),
        (401, "auth"),
        (403, "permission"),
        (404, "not_found"),
        (422, "unprocessable"),
        (500, "server"),
        (503, "server"),
        (302, "unexpected"),
        (418, "unexpected"),
    ],
)
def test_every_status_maps_to_one_error(status: int, kind: str) -> None:
    # Snyk echoing the token must not put it on screen either.
    body = error_body(status, f"something about token {TOKEN}")
    with mock_client(lambda request: httpx.Response(status, json=body)) as client, pytest.raises(SnykApiError) as info:
        client.list_webhooks(ORG)

    assert info.value.kind == kind and info.value.status == status
    assert "fix:" in str(info.value) and TOKEN not in str(info.value)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (httpx.ConnectTimeout("t"), "timeout"),
        (httpx.ReadTimeout("t"), "timeout"),
        (httpx.WriteTimeout("t"), "timeout"),
        (httpx.PoolTimeout("t"), "timeout"),
        (httpx.ConnectError("refused"), "network"),
        (httpx.ReadError("reset"), "network"),
        (httpx.WriteError("broken pipe"), "network"),
        (httpx.RemoteProtocolError("bad"), "network"),
        (httpx.LocalProtocolError("bad"), "network"),
        (httpx.ProxyError("proxy"), "network"),
        (httpx.UnsupportedProtocol("x"), "network"),
        (httpx.DecodingError("gzip"), "network"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_every_httpx_exception_we_rely_on_is_mapped(exc: httpx.HTTPError, kind: str) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise exc

    with mock_client(fail) as client, pytest.raises(SnykApiError) as info:
        client.ping_webhook(ORG, "hook")
    assert info.value.kind == kind and info.value.__cause__ is exc and info.value.status is None


def test_a_tls_failure_is_told_apart_from_other_connect_errors() -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        try:
            raise ssl.SSLCertVerificationError("certificate verify failed")
        except ssl.SSLError as cause:
            raise httpx.ConnectError("certificate verify failed") from cause

    with mock_client(fail) as client, pytest.raises(SnykApiError) as info:
        client.list_webhooks(ORG)
    assert info.value.kind == "tls" and "--cacert" in str(info.value)


@pytest.mark.parametrize(
    "body", [b"<html>proxy error</html>", b"[]", b'{"results": "no"}', b'{"results": [{"id": 1}]}']
)
def test_a_success_with_an_unexpected_body_is_an_error(body: bytes) -> None:
    with mock_client(lambda request: httpx.Response(200, content=body)) as client, pytest.raises(SnykApiError) as info:
        client.list_webhooks(ORG)
    assert info.value.kind == "unexpected"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("0", 0.0), ("1.5", 1.5), ("-3", 0.0), ("soon", None), ("", None), (None, None), ("nan", None)],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


def test_parse_retry_after_http_date() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412480.0) == 30.0
