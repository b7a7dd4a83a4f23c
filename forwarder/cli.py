"""Command line: ``serve`` runs the daemon; ``check-config``, ``send-test``, ``status``, ``replay``,
``flatten`` and the ``snyk`` webhook commands operate it.

Exit codes: 0 success; 1 a command's own failure (``send-test`` got a non-2xx); 2 usage;
69 (EX_UNAVAILABLE) a port, directory or certificate unusable at start; 78 (EX_CONFIG) a
configuration error — systemd units list 78 in RestartPreventExitStatus so a typo does not
restart-loop.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import ssl
import sys
import time
import uuid
from importlib import resources
from pathlib import Path

from forwarder import __version__, cli_snyk
from forwarder.buffer.lock import DirectoryLock
from forwarder.config import Config, load_config
from forwarder.config.embedded import embedded_config
from forwarder.config.reader import SecretUse
from forwarder.errors import ConfigError, ForwarderError

SAMPLES = (
    "snapshot_small.json",
    "snapshot_container.json",
    "snapshot_empty.json",
    "body_a.json",
    "body_b.json",
    "ping.json",
)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"configuration error: {exc.render()}", file=sys.stderr)
        return exc.exit_code
    except ForwarderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 1))
    except BrokenPipeError:  # `snyk-forwarder flatten … | head`: the reader had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="snyk-forwarder",
        description="Receive signed Snyk webhooks, buffer them durably, and forward one record per issue to "
        "syslog, Splunk HEC, Rapid7 or a file.",
    )
    parser.add_argument("--version", action="version", version=f"snyk-forwarder {__version__}")
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="run the daemon (built-in quick-start config when --config is absent)")
    serve.add_argument("--config", type=Path, help="TOML configuration file")
    serve.set_defaults(handler=_serve)

    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("--config", type=Path, help="TOML configuration file (default: the built-in one)")
    check.add_argument("--probe", action="store_true", help="also try to reach every output (health checks)")
    check.set_defaults(handler=_check_config)

    send = sub.add_parser("send-test", help="POST a signed sample Snyk event to a running forwarder")
    send.add_argument("--config", type=Path, help="the running forwarder's configuration (default: built-in)")
    send.add_argument("--file", type=Path, help="payload to send (default: a sample snapshot shipped with the package)")
    send.add_argument(
        "--sample",
        type=_sample_name,
        choices=SAMPLES,
        default="snapshot_small.json",
        help="which shipped sample to send (.json may be left out)",
    )
    send.add_argument(
        "--event",
        default=None,
        help="X-Snyk-Event value (default: ping/v0 for ping.json, else project_snapshot/v0)",
    )
    send.add_argument("--url", help="override the URL derived from the configuration")
    send.add_argument("--cacert", type=Path, help="CA file to verify the forwarder's certificate")
    send.add_argument("--insecure", action="store_true", help="do not verify the certificate (trials only)")
    send.set_defaults(handler=_send_test)
    status = sub.add_parser("status", help="show each output's queue, progress, errors and dead letters")
    status.add_argument("--config", type=Path, help="configuration (default: the built-in one)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=_status)

    replay = sub.add_parser("replay", help="send an output's dead letters back into its queue")
    replay.add_argument("--config", type=Path, help="configuration (default: the built-in one)")
    replay.add_argument("--output", required=True, help="output whose dead letters to replay")
    replay.add_argument(
        "--since",
        type=_moment,
        help="only records that failed at or after this time (ISO 8601, or e.g. 2h for 2 hours ago)",
    )
    replay.add_argument("--until", type=_moment, help="only records that failed before this time (same forms)")
    replay.add_argument("--into", help="queue them for another output instead (e.g. after replacing a SIEM)")
    replay.set_defaults(handler=_replay)

    flatten = sub.add_parser("flatten", help="print the records a saved Snyk payload produces (offline)")
    flatten.add_argument("file", type=Path, help="a project_snapshot/v0 body saved to a file, or - for stdin")
    flatten.add_argument(
        "--format", choices=("ecs-json", "cef", "leef"), default="ecs-json", help="record format (default: ecs-json)"
    )
    flatten.add_argument("--summary", action="store_true", help="also print the snapshot summary record")
    flatten.add_argument(
        "--timestamp",
        type=_snyk_timestamp,
        help="X-Snyk-Timestamp to assume, ISO 8601 as Snyk sends it (default: now)",
    )
    flatten.set_defaults(handler=_flatten)
    cli_snyk.register(sub)
    return parser


def _load(path: Path | None, *, secrets: SecretUse = "resolve") -> Config:
    """The configuration. Only ``serve`` may create the secret files the configuration asks to
    generate: commands an operator runs, perhaps as root, leave no file behind."""
    return embedded_config(secrets=secrets) if path is None else load_config(path, secrets=secrets)


def _serve(args: argparse.Namespace) -> int:
    from forwarder import logs, service  # heavy imports only for the daemon

    config = _load(args.config, secrets="create")
    logs.configure(config.service.log_level)

    def ready(svc: service.Service) -> None:
        _print_banner(svc, args.config)

    return service.run(config, reload_config=lambda: _load(args.config, secrets="create"), on_ready=ready)


def _check_config(args: argparse.Namespace) -> int:
    config = _load(args.config)
    outputs = ", ".join(f"{o.name} ({o.type})" for o in config.outputs)
    print(
        f"{config.source}: OK — listen {config.listen.address}:{config.listen.port}{config.listen.path}, "
        f"{len(config.webhook.secrets)} webhook secret(s), state in {config.state_dir}, outputs: {outputs}"
    )
    for secret in config.webhook.secrets:
        if not secret.available:
            print(f"  note: webhook secret from {secret.source}")
    if not args.probe:
        return 0
    import asyncio

    from forwarder.probe import probe_outputs

    results = asyncio.run(probe_outputs(config.outputs))
    settings = {o.name: o.settings for o in config.outputs}
    for name, problem in results.items():
        if problem is not None:
            print(f"  output {name}: FAILED — {problem}")
        elif getattr(settings[name], "transport", None) == "udp":
            print(f"  output {name}: address resolved (UDP has no handshake: delivery cannot be confirmed)")
        else:
            print(f"  output {name}: reachable")
    return 0 if all(problem is None for problem in results.values()) else 1


def _send_test(args: argparse.Namespace) -> int:
    import httpx

    from forwarder.receiver.verify import signature
    from forwarder.selfsigned import self_signed_ca

    config = _load(args.config)
    secret = config.webhook.secrets[0]
    if not secret.available:
        print(f"the webhook secret does not exist yet ({secret.source}): start the daemon first", file=sys.stderr)
        return 1
    if args.file is not None:
        body = _read_input(args.file)
        if body is None:
            return 1
        name = args.file.name
    else:
        body = resources.files("forwarder.samples").joinpath(args.sample).read_bytes()
        name = args.sample
    event = args.event or ("ping/v0" if name.startswith("ping") else "project_snapshot/v0")
    listen = config.listen
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(listen.address, listen.address)  # noqa: S104
    host = f"[{host}]" if ":" in host else host
    scheme = "http" if listen.plain_http else "https"
    url = args.url or f"{scheme}://{host}:{listen.port}{listen.path}"
    verify: bool | ssl.SSLContext = True
    cafile = args.cacert
    if cafile is None and listen.tls_self_signed:
        cafile = self_signed_ca(config.state_dir)
        if not cafile.exists():
            print(
                f"the daemon has not made its self-signed certificate yet ({cafile} is missing): start it first "
                "(snyk-forwarder serve) with this configuration",
                file=sys.stderr,
            )
            return 1
    if args.insecure:
        verify = False
    elif cafile is not None:
        verify = ssl.create_default_context(cafile=str(cafile))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "snyk-forwarder-send-test",
        "X-Snyk-Event": event,
        "X-Snyk-Transport-ID": str(uuid.uuid4()),
        "X-Hub-Signature": signature(secret.reveal().encode(), body).decode(),
    }
    try:
        response = httpx.post(url, content=body, headers=headers, verify=verify, timeout=30.0)
    except httpx.HTTPError as exc:
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            advice = (
                "its certificate is not trusted here: give the CA that issued it with --cacert /path/to/ca.pem "
                "(or, for a trial only, --insecure)"
            )
        else:
            advice = "is `snyk-forwarder serve` running with this configuration?"
        print(f"could not reach the forwarder at {url}: {exc}; {advice}", file=sys.stderr)
        return 1
    print(f"POST {url} ({name}, {len(body)} bytes, {event}) → {response.status_code} {response.text}")
    return 0 if response.is_success else 1


def _destination(settings: object) -> str:
    """Where an output sends, as the operator wrote it (a file, a URL, or host:port); no tokens."""
    for name in ("path", "url", "endpoint"):
        value = getattr(settings, name, None)
        if value:
            return str(value)
    return f"{getattr(settings, 'host', '?')}:{getattr(settings, 'port', '?')}"


def _print_banner(svc: object, config_path: Path | None) -> None:
    from forwarder.service import Service

    assert isinstance(svc, Service) and svc.endpoint is not None
    config = svc.config
    me = "python -m forwarder" if sys.argv[0].endswith("__main__.py") else shlex.quote(sys.argv[0])
    with_config = f" --config {shlex.quote(str(config_path))}" if config_path else ""
    lines = [f"snyk-forwarder {__version__} listening on {svc.endpoint.url}"]
    if svc.endpoint.ca_file:
        lines.append(f"  TLS:      self-signed; CA for clients: {svc.endpoint.ca_file}")
    lines.append(f"  buffer:   {config.state_dir / 'buffer.db'}")
    if svc.admin_port is not None:
        lines.append(f"  admin:    http://{config.admin.address}:{svc.admin_port}/metrics (/healthz, /readyz)")
    for oc in config.outputs:
        lines.append(f"  output:   {oc.name} ({oc.type}, {oc.delivery.format}) → {_destination(oc.settings)}")
    lines.append("Send a signed sample Snyk event from another terminal:")
    lines.append(f"  {me} send-test{with_config}")
    print("\n".join(lines), flush=True)


def _status(args: argparse.Namespace) -> int:
    from forwarder.buffer.admin import read_status

    config = _load(args.config, secrets="skip")
    buffer = config.buffer
    status = read_status(config.state_dir, [o.name for o in config.outputs], reserve_expected=buffer.reserve_bytes > 0)
    if args.json:
        print(json.dumps(dataclasses.asdict(status), default=str, indent=2))
        return 0
    print(
        f"buffer {status.path}: {_size(status.file_bytes)} on disk, {_size(status.stored_bytes)} in "
        f"{status.events} stored events, {status.quarantined} quarantined (unknown event types); "
        f"{_size(status.free_bytes)} free on its filesystem"
    )
    daemon = DirectoryLock.holder(config.state_dir)
    print("daemon: not running, nothing is being sent" if daemon is None else f"daemon: running (pid {daemon})")
    if status.reserve_released:
        print("DISK FULL: new deliveries get 503 until space is freed (the outputs keep draining)")
    if status.stored_bytes >= buffer.high_water * buffer.max_bytes:
        print(
            f"BUFFER FULL: above its high-water mark ({buffer.high_water:g} × buffer.max_bytes "
            f"{_size(buffer.max_bytes)}); new deliveries get 503 until the outputs catch up"
        )
    print(f"{'OUTPUT':<16} {'PENDING EVENTS':>14} {'OLDEST':>8} {'DELIVERED':>10} {'DEAD':>6}  STATE")
    for o in status.outputs:
        state = f"paused: {o.paused}" if o.paused else o.state
        if daemon is None and o.state in ("sending", "retrying"):
            state = f"stopped ({o.state} when last running)"
        print(
            f"{o.name:<16} {o.pending_events:>14} {_age(o.oldest_pending_age_s):>8} {o.delivered:>10} "
            f"{o.dead_letters:>6}  {state}"
        )
        if o.state == "retrying" and o.last_error:  # an older error was followed by progress: not news
            ago = _age(time.time() - o.last_error_at) if o.last_error_at else "?"
            print(f"{'':<16} last error {ago} ago: {o.last_error}")
        if o.replays_queued:
            print(f"{'':<16} {o.replays_queued} dead letters queued for replay")
    if status.recent_dead_letters:
        print("recent dead letters (replay with: snyk-forwarder replay --output NAME):")
        for d in status.recent_dead_letters[:10]:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(d.failed_at))
            print(f"  {when}Z {d.output} record {d.record_id} (event {d.event_id}#{d.record_index}): {d.reason}")
    return 0


def _replay(args: argparse.Namespace) -> int:
    from forwarder.buffer.admin import replay

    config = _load(args.config, secrets="skip")
    names = [o.name for o in config.outputs]
    for name in filter(None, (args.output, args.into)):
        if name not in names:
            print(
                f"error: no output named {name!r} in {config.source}; configured: {', '.join(names)}", file=sys.stderr
            )
            return 2
    if args.since is not None and args.until is not None and args.since >= args.until:
        print("error: --since must be earlier than --until", file=sys.stderr)
        return 2
    queued, skipped = replay(config.state_dir, args.output, since=args.since, until=args.until, into=args.into)
    target = args.into or args.output
    if DirectoryLock.holder(config.state_dir) is None:
        print(f"queued {queued} dead letters for {target}; the daemon is not running: it sends them when it starts")
    else:
        print(f"queued {queued} dead letters for {target}; the running daemon sends them within seconds")
    if skipped:
        print(f"{skipped} older dead letters hold no stored record and cannot be replayed")
    return 0


def _read_input(path: Path) -> bytes | None:
    try:
        return sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    except OSError as exc:
        print(f"error: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return None


def _flatten(args: argparse.Namespace) -> int:
    import hashlib

    import orjson

    from forwarder.config.model import DeliveryConfig
    from forwarder.flatten import Snapshot, shape_problems
    from forwarder.formats import build_formatter
    from forwarder.types import StoredEvent, Webhook

    body = _read_input(args.file)
    if body is None:
        return 1
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        print(f"error: {args.file} is not JSON: {exc}", file=sys.stderr)
        return 1
    webhook = Webhook(
        body=body,
        body_sha256=hashlib.sha256(body).hexdigest(),
        event_name="project_snapshot/v0",
        received_at=time.time(),
        snyk_timestamp=args.timestamp,
    )
    for problem in shape_problems(payload):
        print(f"warning: {args.file}: {problem}; those parts yield no records", file=sys.stderr)
    snapshot = Snapshot(StoredEvent(0, webhook), payload, summary=args.summary)
    formatter = build_formatter(DeliveryConfig(format=args.format))
    out = sys.stdout.buffer
    for index in range(len(snapshot)):
        record = snapshot.record(index)
        if record is not None:
            out.write(formatter(record) + b"\n")
    out.flush()
    return 0


def _moment(text: str) -> float:
    """``--since``/``--until``: an ISO 8601 time, or a duration meaning that long ago (2h, 30m)."""
    from forwarder.config.reader import parse_duration
    from forwarder.flatten.timestamps import parse_ms

    ago = parse_duration(text)
    if ago is not None and not text.strip().replace(".", "").isdigit():
        return time.time() - ago
    ms = parse_ms(text)
    if ms is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time or a duration (e.g. 2026-12-03T09:00:00Z or 2h)"
        )
    return ms / 1000


def _snyk_timestamp(text: str) -> str:
    """``flatten --timestamp``: checked here, since the flattener quietly ignores what it cannot read."""
    from forwarder.flatten.timestamps import parse_ms

    if parse_ms(text) is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time like Snyk's, e.g. 2024-03-07T09:05:03.120Z")
    return text


def _sample_name(text: str) -> str:
    return text if text.endswith(".json") else f"{text}.json"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
