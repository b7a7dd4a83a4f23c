"""One Snyk issue (or one snapshot summary) → one ECS document.

The full mapping is documented as a table in ``docs/ecs-mapping.md``; keep the two in step.
Everything here is pure: the caller passes the timestamps in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from forwarder.flatten import severity as sev
from forwarder.flatten.timestamps import format_ms, normalized
from forwarder.flatten.values import compact, flag, ident, idents, integer, number, obj, text

ECS_VERSION = "8.11.0"
_CVSS_VERSION = re.compile(r"^CVSS:(\d+\.\d+)/")
_CONTAINER_TYPES = frozenset({"apk", "deb", "rpm", "linux", "dockerfile"})
_LABEL_KEY = re.compile(r"[^A-Za-z0-9_]+")


@dataclass(frozen=True, slots=True)
class Context:
    """Per-delivery facts shared by every record of one snapshot."""

    record_id: str
    time_ms: int
    received_ms: int
    body_sha256: str
    transport_id: str | None
    project: dict[str, Any]
    org: dict[str, Any]
    group: dict[str, Any]


def issue_document(ctx: Context, issue: dict[str, Any], action: str) -> dict[str, Any]:
    data = obj(issue.get("issueData"))
    severity = sev.normalize(data.get("severity"))
    issue_id = ident(issue.get("id")) or ident(data.get("id"))
    title = text(data.get("title"))
    identifiers = _identifiers(data.get("identifiers"))
    cves = identifiers.get("cve")
    versions = idents(issue.get("pkgVersions"))
    score = number(data.get("cvssScore"))
    vector = text(data.get("CVSSv3"))
    vector_version = _CVSS_VERSION.match(vector) if vector else None
    fix = obj(issue.get("fixInfo"))
    priority = obj(issue.get("priority"))
    project_type = text(ctx.project.get("type"))
    document = {
        "@timestamp": format_ms(ctx.time_ms),
        "ecs": {"version": ECS_VERSION},
        "message": _message(action, severity, title or issue_id, ident(issue.get("pkgName")), versions, ctx.project),
        "event": {
            **_event(ctx, action),
            "kind": "alert",
            "dataset": "snyk.issues",
            "severity": sev.SCORE.get(severity) if severity else None,
            "reference": text(data.get("url")),
        },
        "vulnerability": {
            "id": cves or ([issue_id] if issue_id else None),
            "enumeration": "CVE" if cves else ("SNYK" if issue_id else None),
            "description": text(data.get("description")) or title,
            "severity": severity,
            "score": {"base": score, "version": vector_version.group(1) if vector_version else None},
            "classification": "CVSS" if score is not None else None,
            "reference": text(data.get("url")),
            "category": [project_type] if project_type else None,
            "scanner": {"vendor": "Snyk"},
            "report_id": ctx.body_sha256,
        },
        "package": {
            "name": ident(issue.get("pkgName")),
            "version": versions[0] if versions else None,
            "type": project_type,
        },
        **_common(ctx),
        "snyk": {
            **_snyk_common(ctx),
            "issue": {
                "id": issue_id,
                "type": text(issue.get("issueType")),
                "title": title,
                "url": text(data.get("url")),
                "package_versions": versions,
                "language": text(data.get("language")),
                "exploit_maturity": text(data.get("exploitMaturity")),
                "cvss_vector": vector,
                "original_severity": sev.normalize(data.get("originalSeverity")),
                "publication_time": normalized(data.get("publicationTime")),
                "disclosure_time": normalized(data.get("disclosureTime")),
                "is_patched": flag(issue.get("isPatched")),
                "is_ignored": flag(issue.get("isIgnored")),
                "is_malicious_package": flag(data.get("isMaliciousPackage")),
                "identifiers": identifiers,
                "credit": idents(data.get("credit")),
                "semver_vulnerable": idents(obj(data.get("semver")).get("vulnerable")),
            },
            "priority": {
                "score": _first(integer(priority.get("score")), integer(issue.get("priorityScore"))),
                "factors": idents([obj(f).get("name") for f in priority.get("factors") or [] if isinstance(f, dict)]),
            },
            "fix": {
                "is_upgradable": flag(fix.get("isUpgradable")),
                "is_pinnable": flag(fix.get("isPinnable")),
                "is_patchable": flag(fix.get("isPatchable")),
                "is_fixable": flag(fix.get("isFixable")),
                "is_partially_fixable": flag(fix.get("isPartiallyFixable")),
                "nearest_fixed_in_version": text(fix.get("nearestFixedInVersion"))
                or text(data.get("nearestFixedInVersion")),
                "fixed_in": idents(fix.get("fixedIn")),
            },
        },
    }
    return compact(document)  # type: ignore[no-any-return]


def summary_document(ctx: Context, new: int, removed: int) -> dict[str, Any]:
    counts = obj(ctx.project.get("issueCountsBySeverity"))
    by_severity = {name: integer(counts.get(name)) for name in sev.ORDER}
    name = text(ctx.project.get("name")) or ident(ctx.project.get("id")) or "unknown project"
    open_counts = ", ".join(f"{k} {v}" for k, v in reversed(by_severity.items()) if v is not None)
    document = {
        "@timestamp": format_ms(ctx.time_ms),
        "ecs": {"version": ECS_VERSION},
        "message": f"Snyk tested {name}: {new} new, {removed} resolved"
        + (f"; open: {open_counts}" if open_counts else ""),
        "event": {**_event(ctx, "summary"), "kind": "event", "dataset": "snyk.snapshots"},
        **_common(ctx),
        "snyk": {
            **_snyk_common(ctx),
            "snapshot": {
                "new_issues": new,
                "resolved_issues": removed,
                "issue_counts": by_severity,
                "total_dependencies": integer(ctx.project.get("totalDependencies")),
                "last_tested": normalized(ctx.project.get("lastTestedDate")),
            },
        },
    }
    return compact(document)  # type: ignore[no-any-return]


def _event(ctx: Context, action: str) -> dict[str, Any]:
    return {
        "category": ["vulnerability"],
        "type": ["info"],
        "action": action,
        "id": ctx.record_id,
        "module": "snyk",
        "provider": "snyk-webhook",
        "created": format_ms(ctx.received_ms),
        "url": text(ctx.project.get("browseUrl")),
    }


def _common(ctx: Context) -> dict[str, Any]:
    """ECS fields about where the finding lives, the same on every record of a snapshot."""
    project = ctx.project
    return {
        "organization": {"id": ident(ctx.org.get("id")), "name": text(ctx.org.get("name"))},
        "observer": {"vendor": "Snyk", "product": _product(project), "type": "vulnerability-scanner"},
        "host": {"name": text(project.get("hostname"))},
        "labels": _labels(project.get("tags")),
    }


def _snyk_common(ctx: Context) -> dict[str, Any]:
    project = ctx.project
    attributes = obj(project.get("attributes"))
    return {
        "project": {
            "id": ident(project.get("id")),
            "name": text(project.get("name")),
            "type": text(project.get("type")),
            "origin": text(project.get("origin")),
            "branch": text(project.get("branch")),
            "target_reference": text(project.get("targetReference")),
            "browse_url": text(project.get("browseUrl")),
            "remote_repo_url": text(project.get("remoteRepoUrl")),
            "test_frequency": text(project.get("testFrequency")),
            "is_monitored": flag(project.get("isMonitored")),
            "image": {
                "id": text(project.get("imageId")),
                "tag": text(project.get("imageTag")),
                "base_image": text(project.get("imageBaseImage")),
                "platform": text(project.get("imagePlatform")),
                "cluster": text(project.get("imageCluster")),
            },
            "attributes": {
                "criticality": idents(attributes.get("criticality")),
                "environment": idents(attributes.get("environment")),
                "lifecycle": idents(attributes.get("lifecycle")),
            },
        },
        "org": {"slug": text(ctx.org.get("slug"))},
        "group": {"id": ident(ctx.group.get("id")), "name": text(ctx.group.get("name"))},
        "delivery": {"transport_id": ctx.transport_id, "body_sha256": ctx.body_sha256},
    }


def _identifiers(value: Any) -> dict[str, list[str]]:
    """``{"CVE": [...], "CWE": [...], "NSP": [123]}`` → lower-case keys, string values, empties dropped."""
    result: dict[str, list[str]] = {}
    for key, items in obj(value).items():
        name = _LABEL_KEY.sub("_", str(key)).strip("_").lower()
        values = idents(items)
        if name and values:
            result.setdefault(name, []).extend(v for v in values if v not in result.get(name, []))
    return result


def _labels(tags: Any) -> dict[str, str] | None:
    """Project tags → ECS ``labels`` (keys may not contain dots, so anything unusual becomes ``_``)."""
    if not isinstance(tags, list):
        return None
    labels: dict[str, str] = {}
    for tag in tags:
        key, value = text(obj(tag).get("key")), text(obj(tag).get("value"))
        if key and value:
            clean = _LABEL_KEY.sub("_", key).strip("_")
            if clean:
                labels[clean] = value
    return labels or None


def _first(*values: int | None) -> int | None:
    return next((v for v in values if v is not None), None)


def _product(project: dict[str, Any]) -> str:
    return "Snyk Container" if text(project.get("type")) in _CONTAINER_TYPES else "Snyk Open Source"


def _message(
    action: str,
    severity: str | None,
    title: str | None,
    package: str | None,
    versions: list[str] | None,
    project: dict[str, Any],
) -> str:
    verb = "Introduced" if action == "introduced" else "Resolved"
    parts = [verb, severity or "unknown-severity", "issue", f'"{title}"' if title else "(untitled)"]
    if package:
        parts += ["in", package + (f"@{versions[0]}" if versions else "")]
    name = text(project.get("name"))
    if name:
        parts.append(f"({name})")
    return " ".join(parts)
