"""``snyk-forwarder snyk list|create|delete|ping``: manage an org's webhooks through Snyk's v1 API.

Every subcommand takes ``--org``, the region (``--region us|us2|eu|au`` or ``--api-url``), the API
token (``--token-env VAR``, default ``SNYK_TOKEN``; ``--token-file PATH``; ``--token-credential NAME``
under systemd), ``--cacert`` and ``--timeout``. The token and webhook secrets are never printed.

Registration is idempotent (notes §9): ``create`` lists the org's webhooks and creates one only if
none has the same URL, unless ``--force`` (secret rotation, which needs a second webhook because
Snyk cannot change a secret). Exit codes as in :mod:`forwarder.cli`: 0 ok; 1 Snyk or the network
failed (:class:`~forwarder.snyk_api.SnykApiError`), or a delete found nothing or was declined;
2 usage; 78 token, secret, CA file or configuration unusable (:class:`~forwarder.errors.ConfigError`).
httpx is imported only when a ``snyk`` subcommand runs.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from forwarder.config.secrets import Secret
from forwarder.errors import ConfigError

if TYPE_CHECKING:
    import ssl

    from forwarder.snyk_api import SnykClient

DEFAULT_TOKEN_ENV = "SNYK_TOKEN"  # noqa: S105 - the name of a variable, not a token
REGION_CHOICES = ("us", "us2", "eu", "au")  # keys of forwarder.snyk_api.REGIONS (a test keeps them equal)
_API_KEY_ORIGIN = "a Snyk API token (a service account's, or Account settings › API token) with Org Admin"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``snyk`` and its subcommands to the top-level subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--org", required=True, metavar="ORG_ID", help="the Snyk organization ID (a UUID)")
    where = common.add_mutually_exclusive_group()
    where.add_argument(
        "--region",
        choices=REGION_CHOICES,
        help="Snyk region hosting the org: us = SNYK-US-01 (default), us2 = SNYK-US-02, eu = SNYK-EU-01, "
        "au = SNYK-AU-01",
    )
    where.add_argument(
        "--api-url", type=_api_url, metavar="URL", help="v1 base URL instead of --region (a proxy, or tests)"
    )
    common.add_argument("--cacert", type=Path, metavar="PATH", help="CA file to verify the API's certificate")
    token = common.add_mutually_exclusive_group()
    token.add_argument(
        "--token-env", metavar="VAR", help=f"environment variable holding the API token (default {DEFAULT_TOKEN_ENV})"
    )
    token.add_argument("--token-file", type=Path, metavar="PATH", help="file holding the API token")
    token.add_argument("--token-credential", metavar="NAME", help="systemd credential holding the API token")
    common.add_argument("--timeout", type=_positive_float, default=30.0, metavar="SECONDS", help="per request")

    snyk = sub.add_parser(
        "snyk",
        help="list, create, delete and ping the Snyk org's webhooks (v1 API)",
        description="Manage the webhooks of a Snyk organization through Snyk's v1 API.",
    )
    commands = snyk.add_subparsers(dest="snyk_command", metavar="COMMAND", required=True)

    show = commands.add_parser("list", parents=[common], help="list the org's webhooks (id and url)")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(handler=_list, snyk_parser=show)

    create = commands.add_parser(
        "create", parents=[common], help="register the forwarder's URL with its webhook secret (idempotent)"
    )
    create.add_argument(
        "--url", required=True, type=_webhook_url, help="the forwarder's public URL, e.g. https://host/webhooks/snyk"
    )
    secret = create.add_mutually_exclusive_group()
    secret.add_argument(
        "--config",
        type=Path,
        help="take the webhook secret from this configuration (default: the built-in one, as serve uses)",
    )
    secret.add_argument("--secret-env", metavar="VAR", help="take the webhook secret from this environment variable")
    secret.add_argument("--secret-file", type=Path, metavar="PATH", help="take the webhook secret from this file")
    create.add_argument(
        "--secret-index",
        type=_positive_int,
        metavar="N",
        help="which of the configuration's webhook secrets (1 = first, the default; 2 = the new one while rotating)",
    )
    create.add_argument(
        "--force", action="store_true", help="create even if a webhook with this URL exists (secret rotation)"
    )
    create.set_defaults(handler=_create, snyk_parser=create)

    delete = commands.add_parser("delete", parents=[common], help="delete one webhook of the org")
    target = delete.add_mutually_exclusive_group(required=True)
    target.add_argument("--id", metavar="WEBHOOK_ID", help="the webhook's id (see `snyk list`)")
    target.add_argument("--url", help="the webhook's URL (must match exactly one webhook)")
    delete.add_argument("--yes", "-y", action="store_true", help="do not ask (required when stdin is not a terminal)")
    delete.set_defaults(handler=_delete, snyk_parser=delete)

    ping = commands.add_parser("ping", parents=[common], help="ask Snyk to send a ping/v0 to a webhook")
    ping.add_argument("--id", required=True, metavar="WEBHOOK_ID", help="the webhook's id (see `snyk list`)")
    ping.set_defaults(handler=_ping, snyk_parser=ping)


# -- handlers ---------------------------------------------------------------------------------------------


def _list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        hooks = client.list_webhooks(args.org)
    if args.json:
        print(json.dumps([{"id": h.id, "url": h.url} for h in hooks], indent=2))
    elif not hooks:
        print(f"org {args.org} has no webhooks")
    else:
        width = max(36, *(len(h.id) for h in hooks))
        print(f"{'ID':<{width}}  URL")
        for h in hooks:
            print(f"{h.id:<{width}}  {h.url}")
    return 0


def _create(args: argparse.Namespace) -> int:
    if args.secret_index is not None and (args.secret_env or args.secret_file):
        args.snyk_parser.error(
            "--secret-index picks a secret of --config; it cannot be combined with --secret-env/-file"
        )
    secret = _webhook_secret(args)  # configuration errors come before any request
    _warn_if_unreachable(args.url)
    with _client(args) as client:
        same = [h for h in client.list_webhooks(args.org) if h.url == args.url]
        if same and not args.force:
            ids = ", ".join(h.id for h in same)
            print(
                f"webhook {ids} of org {args.org} already sends to {args.url}; nothing created.\n"
                "Snyk never returns a webhook's secret, so this cannot tell which secret it uses: "
                f"`snyk-forwarder snyk ping --org {args.org} --id ID` and the forwarder's log tell. "
                "To rotate the secret, create a second webhook with --force (see docs/snyk-webhooks.md)."
            )
            return 0
        if same:
            print(
                f"note: webhook {', '.join(h.id for h in same)} already sends to this URL; creating another "
                "(--force). Until the old one is deleted, every event arrives twice.",
                file=sys.stderr,
            )
        hook = client.create_webhook(args.org, args.url, secret)
    print(f"created webhook {hook.id} for {hook.url} in org {args.org}")
    print(
        f"Snyk sends a ping/v0 to it right away, signed with the secret from {secret.source}: the forwarder "
        "logs it as accepted, or answers 401 if it does not hold that secret yet."
    )
    return 0


def _delete(args: argparse.Namespace) -> int:
    if not args.yes and not _stdin_is_tty():
        args.snyk_parser.error("refusing to delete without --yes: stdin is not a terminal to ask on")
    with _client(args) as client:
        if args.url is not None:
            matches = [h for h in client.list_webhooks(args.org) if h.url == args.url]
            if len(matches) != 1:
                found = ", ".join(h.id for h in matches) or "none"
                print(
                    f"error: {len(matches)} webhooks of org {args.org} send to {args.url} ({found}), so nothing was "
                    f"deleted; fix: pick one with --id (`snyk-forwarder snyk list --org {args.org}` shows them)",
                    file=sys.stderr,
                )
                return 1
            hook_id, url = matches[0].id, matches[0].url
        elif args.yes:
            hook_id, url = args.id, ""
        else:
            found_hook = client.get_webhook(args.org, args.id)
            hook_id, url = found_hook.id, found_hook.url
        shown = f"{hook_id} ({url})" if url else hook_id
        if not args.yes and not _confirm(f"Delete webhook {shown} of org {args.org}? [y/N] "):
            print("nothing deleted", file=sys.stderr)
            return 1
        client.delete_webhook(args.org, hook_id)
    print(f"deleted webhook {shown} of org {args.org}")
    return 0


def _ping(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.ping_webhook(args.org, args.id)
    print(
        f"Snyk accepted the ping: it sends a ping/v0 to webhook {args.id}'s URL now, signed with that webhook's "
        "secret; the forwarder logs it as accepted, or answers 401 if it does not hold that secret."
    )
    return 0


# -- building the client ------------------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> SnykClient:
    from forwarder.snyk_api import REGIONS, SnykClient

    token = _token(args)
    base_url = args.api_url or REGIONS[args.region or "us"].api_url
    return SnykClient(base_url, token, verify=_verify(args.cacert), timeout=args.timeout, notice=_notice)


def _token(args: argparse.Namespace) -> Secret:
    """The API token, with ``source`` naming the option it came from (used in the 401 message)."""
    if args.token_file is not None:
        option, shown = "--token-file", str(args.token_file)
        spec: dict[str, str] = {"file": str(args.token_file)}
        hint = f"write the token into {args.token_file} (one line, readable only by you), or use --token-env VAR"
    elif args.token_credential is not None:
        option, shown = "--token-credential", args.token_credential
        spec = {"credential": args.token_credential}
        hint = f"add LoadCredential={args.token_credential}:/path/to/token to the unit, or use --token-file PATH"
    else:
        var = args.token_env or DEFAULT_TOKEN_ENV
        option, shown = "--token-env", var
        spec = {"env": var}
        hint = f"export {var}=… with {_API_KEY_ORIGIN}, or pass --token-file PATH or --token-credential NAME"
    value = _resolve(option, spec, hint).strip()
    if not value.isascii() or not value.isprintable() or any(c.isspace() for c in value):
        raise ConfigError(
            option, "holds characters an API token never has (spaces, control or non-ASCII characters)", hint=hint
        )
    return Secret(f"{option} {shown}", value)


def _webhook_secret(args: argparse.Namespace) -> Secret:
    """The secret Snyk will sign with: the daemon's own (``--config``), or ``--secret-env``/``--secret-file``."""
    if args.secret_env:
        hint = f"export {args.secret_env}=… with the secret the forwarder's webhook.secrets holds"
        value = _resolve("--secret-env", {"env": args.secret_env}, hint)
        return Secret(f"--secret-env {args.secret_env}", value)
    if args.secret_file is not None:
        hint = f"write the secret the forwarder's webhook.secrets holds into {args.secret_file}"
        value = _resolve("--secret-file", {"file": str(args.secret_file)}, hint)
        return Secret(f"--secret-file {args.secret_file}", value)
    from forwarder.config import load_config
    from forwarder.config.embedded import embedded_config

    if args.config is None:
        _check_embedded_secret_exists()
    config = embedded_config() if args.config is None else load_config(args.config)
    index = args.secret_index or 1
    secrets = config.webhook.secrets
    if index > len(secrets):
        raise ConfigError(
            "webhook.secrets",
            f"holds {len(secrets)} secret(s), so --secret-index {index} names none",
            file=config.source,
            hint='while rotating, list the old and the new secret, secrets = [ { env = "OLD" }, { env = "NEW" } ], '
            "restart or reload the forwarder, then create with --secret-index 2",
        )
    chosen = secrets[index - 1]
    return Secret(f"{config.source}, webhook secret {index} ({chosen.source})", chosen.reveal())


def _check_embedded_secret_exists() -> None:
    """The built-in configuration generates its secret file on first use; registering a freshly generated
    secret that no running forwarder holds would only produce failing pings, so refuse instead."""
    import tomllib

    from forwarder.config.embedded import TEXT

    spec = tomllib.loads(TEXT).get("webhook", {}).get("secret")
    if not isinstance(spec, dict) or not isinstance(spec.get("file"), str):
        return
    path = Path.cwd() / spec["file"]
    if not path.exists():
        raise ConfigError(
            "--config",
            f"is not given, and the built-in configuration's secret file {path} does not exist, so no "
            "forwarder holds that secret",
            hint="pass --config with the forwarder's configuration (or --secret-file / --secret-env), or run this "
            "in the directory where `snyk-forwarder serve` runs with its built-in configuration",
        )


def _resolve(option: str, spec: dict[str, str], hint: str) -> str:
    """Read a secret the way the configuration does (env, file or systemd credential), keyed by ``option``."""
    from forwarder.config.reader import Table
    from forwarder.config.secrets import resolve_secret

    try:
        return resolve_secret(Table({}, "", Path.cwd()), option, spec).reveal()
    except ConfigError as exc:
        # resolve_secret's own hints speak TOML; keep its finding, give the command-line fix.
        raise ConfigError(option, exc.message.split(";")[0], hint=hint) from None


def _verify(cacert: Path | None) -> ssl.SSLContext | bool:
    if cacert is None:
        return True
    import ssl

    try:
        return ssl.create_default_context(cafile=str(cacert))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            "--cacert",
            f"cannot load CA file {cacert}: {exc.__class__.__name__}: {exc}",
            hint="give a PEM file holding the CA certificate that signed the API's (or the proxy's) certificate",
        ) from exc


# -- small helpers ------------------------------------------------------------------------------------------


def _api_url(text: str) -> str:
    from forwarder.snyk_api import api_url_problem

    problem = api_url_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{text!r} {problem}")
    return text


def _webhook_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme.lower() != "https" or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an https:// URL; Snyk only calls HTTPS endpoints, e.g. "
            "https://forwarder.example.com/webhooks/snyk"
        )
    return text


def _warn_if_unreachable(url: str) -> None:
    host = urlsplit(url).hostname or ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host.lower() != "localhost":
            return
    else:
        if address.is_global:
            return
    print(f"note: {host} is not a public address; Snyk's servers cannot reach {url}", file=sys.stderr)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _stdin_is_tty() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def _confirm(question: str) -> bool:
    print(question, end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def _notice(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)
