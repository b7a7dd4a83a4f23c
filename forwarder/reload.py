"""What a SIGHUP reload changes, decided by comparing the running and the new configuration. Pure.

Reloaded in place: webhook secrets, the TLS certificate (always re-read: a renewed file keeps its
path), request limits, outputs (added, removed, or replaced one by one while the others keep
shipping), the log level. Everything that owns a socket or the buffer file — listen address and
port, the state directory, buffer settings, the admin listener — needs a restart; the reload
says which keys and keeps running with the old values for those.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from forwarder.config import Config

# ListenConfig fields that can change without rebinding the socket.
_LISTEN_RELOADABLE = frozenset(
    {
        "path",
        "tls_cert",
        "tls_key",
        "max_body_bytes",
        "max_inflight_body_bytes",
        "body_timeout",
        "body_idle_timeout",
    }
)


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    restart_needed: tuple[str, ...]
    secrets_changed: bool
    listen_changed: bool
    outputs_added: tuple[str, ...]
    outputs_removed: tuple[str, ...]
    outputs_replaced: tuple[str, ...]
    log_level_changed: bool

    def summary(self) -> list[str]:
        changes = []
        if self.secrets_changed:
            changes.append("webhook secrets")
        if self.listen_changed:
            changes.append("listener limits/certificate")
        changes += [f"output {n} added" for n in self.outputs_added]
        changes += [f"output {n} removed" for n in self.outputs_removed]
        changes += [f"output {n} replaced" for n in self.outputs_replaced]
        if self.log_level_changed:
            changes.append("log level")
        return changes


def plan(old: Config, new: Config) -> ReloadPlan:
    restart = [
        f"listen.{f.name}"
        for f in fields(old.listen)
        if f.name not in _LISTEN_RELOADABLE and getattr(old.listen, f.name) != getattr(new.listen, f.name)
    ]
    if old.buffer != new.buffer:
        restart += [
            f"buffer.{f.name}" for f in fields(old.buffer) if getattr(old.buffer, f.name) != getattr(new.buffer, f.name)
        ]
    if old.admin != new.admin:
        restart.append("admin")
    if old.service.shutdown_timeout != new.service.shutdown_timeout:
        restart.append("service.shutdown_timeout")
    listen_changed = any(getattr(old.listen, k) != getattr(new.listen, k) for k in _LISTEN_RELOADABLE)
    before = {o.name: o for o in old.outputs}
    after = {o.name: o for o in new.outputs}
    summary_changed = old.records != new.records
    return ReloadPlan(
        restart_needed=tuple(restart),
        secrets_changed=[s.reveal() for s in old.webhook.secrets] != [s.reveal() for s in new.webhook.secrets],
        listen_changed=listen_changed,
        outputs_added=tuple(n for n in after if n not in before),
        outputs_removed=tuple(n for n in before if n not in after),
        outputs_replaced=tuple(n for n in after if n in before and (after[n] != before[n] or summary_changed)),
        log_level_changed=old.service.log_level != new.service.log_level,
    )


def keep_running(old: Config, new: Config) -> Config:
    """``new``, except where a setting needs a restart: there the running value stays in force."""
    listen = replace(
        new.listen,
        **{f.name: getattr(old.listen, f.name) for f in fields(old.listen) if f.name not in _LISTEN_RELOADABLE},
    )
    service = replace(new.service, shutdown_timeout=old.service.shutdown_timeout)
    return replace(new, listen=listen, buffer=old.buffer, admin=old.admin, service=service)
