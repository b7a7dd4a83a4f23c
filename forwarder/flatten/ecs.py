"""One Snyk issue (or one snapshot summary) → one ECS document.

The full mapping is documented as a table in ``docs/ecs-mapping.md``; keep the two in step.
Everything here is pure: the caller passes the timestamps in.

What is the same for every record of a snapshot (project, organization, times…) is built and
compacted once in :class:`SnapshotFacts` and shared by the records' documents, which are never
mutated afterwards (shortening works on a deep copy): a 5,000-issue snapshot does that work once.
"""

from __future__ import annotations

import re
from typing import Any

from forwarder.flatten import severity as sev
from forwarder.flatten.timestamps import format_ms, normalized
from forwarder.flatten.values import compact, flag, ident, idents, integer, number, obj, pack, text

ECS_VERSION = "8.11.0"
_ECS = {"version": ECS_VERSION}
_CVSS_VERSION = re.compile(r"^CVSS:(\d+\.\d+)/")
_CONTAINER_TYPES = frozenset({"apk", "deb", "rpm", "linux", "dockerfile"})
_LABEL_KEY = re.compile(r"[^A-Za-z0-9_]+")
_CATEGORY = ["vulnerability"]
_TYPE = ["info"]
_SCANNER = {"vendor": "Snyk"}


class SnapshotFacts:
    """Per-delivery facts shared by every record of one snapshot, computed once."""

    def __init__(
        self,
        *,
        time_ms: int,
        received_ms: int,
        body_sha256: str,
        transport_id: str | None,
        project: dict[str, Any],
        org: dict[str, Any],
        group: dict[str, Any],
    ) -> None:
        self.time_ms = time_ms
        self.body_sha256 = body_sha256
        self.project = project
        self.timestamp = format_ms(time_ms)
        self.project_type = text(project.get("type"))
        self.project_name = text(project.get("name"))
        browse_url = text(project.get("browseUrl"))
        self.event: dict[str, Any] = {
            "category": _CATEGORY,
            "type": _TYPE,
            "module": "snyk",
            "provider": "snyk-webhook",
            "created": format_ms(received_ms),
        }
        if browse_url:
            self.event["url"] = browse_url
        common = {
            "organization": pack(id=ident(org.get("id")), name=text(org.get("name"))),
            "observer": {"vendor": "Snyk", "product": _product(project), "type": "vulnerability-scanner"},
            "host": pack(name=text(project.get("hostname"))),
            "labels": _labels(project.get("tags")),
        }
        self.common: dict[str, Any] = {key: value for key, value in common.items() if value is not None}
        attributes = obj(project.get("attributes"))
        snyk = {
            "project": pack(
                id=ident(project.get("id")),
                name=self.project_name,
                type=self.project_type,
                origin=text(project.get("origin")),
                branch=text(project.get("branch")),
                target_reference=text(project.get("targetReference")),
                browse_url=browse_url,
                remote_repo_url=text(project.get("remoteRepoUrl")),
                test_frequency=text(project.get("testFrequency")),
                is_monitored=flag(project.get("isMonitored")),
                image=pack(
                    id=text(project.get("imageId")),
                    tag=text(project.get("imageTag")),
                    base_image=text(project.get("imageBaseImage")),
                    platform=text(project.get("imagePlatform")),
                    cluster=text(project.get("imageCluster")),
                ),
                attributes=pack(
                    criticality=idents(attributes.get("criticality")),
                    environment=idents(attributes.get("environment")),
                    lifecycle=idents(attributes.get("lifecycle")),
                ),
            ),
            "org": pack(slug=text(org.get("slug"))),
            "group": pack(id=ident(group.get("id")), name=text(group.get("name"))),
            "delivery": pack(transport_id=transport_id, body_sha256=body_sha256),
        }
        self.snyk: dict[str, Any] = {key: value for key, value in snyk.items() if value is not None}
        self.category = [self.project_type] if self.project_type else None


def issue_document(facts: SnapshotFacts, record_id: str, issue: dict[str, Any], action: str) -> dict[str, Any]:
    data = obj(issue.get("issueData"))
    severity = sev.normalize(data.get("severity"))
    issue_id = ident(issue.get("id")) or ident(data.get("id"))
    title = text(data.get("title"))
    identifiers = _identifiers(data.get("identifiers"))
    cves = identifiers.get("cve")
    versions = idents(issue.get("pkgVersions"))
    package_name = ident(issue.get("pkgName"))
    score = number(data.get("cvssScore"))
    vector = text(data.get("CVSSv3"))
    vector_version = _CVSS_VERSION.match(vector) if vector else None
    url = text(data.get("url"))
    fix = obj(issue.get("fixInfo"))
    priority = obj(issue.get("priority"))
    # pack() drops None as each object is built: the readers above already turn empty strings and
    # lists into None, so no recursive clean-up pass is needed (it was a third of the cost).
    vulnerability = pack(
        id=cves or ([issue_id] if issue_id else None),
        enumeration="CVE" if cves else ("SNYK" if issue_id else None),
        description=text(data.get("description")) or title,
        severity=severity,
        score=pack(base=score, version=vector_version.group(1) if vector_version else None),
        classification="CVSS" if score is not None else None,
        reference=url,
        category=facts.category,
        scanner=_SCANNER,
        report_id=facts.body_sha256,
    )
    snyk = {**facts.snyk}
    snyk_issue = pack(
        id=issue_id,
        type=text(issue.get("issueType")),
        title=title,
        url=url,
        package_versions=versions,
        language=text(data.get("language")),
        exploit_maturity=text(data.get("exploitMaturity")),
        cvss_vector=vector,
        original_severity=sev.normalize(data.get("originalSeverity")),
        publication_time=normalized(data.get("publicationTime")),
        disclosure_time=normalized(data.get("disclosureTime")),
        is_patched=flag(issue.get("isPatched")),
        is_ignored=flag(issue.get("isIgnored")),
        is_malicious_package=flag(data.get("isMaliciousPackage")),
        identifiers=identifiers or None,
        credit=idents(data.get("credit")),
        semver_vulnerable=idents(obj(data.get("semver")).get("vulnerable")),
    )
    factors = priority.get("factors")
    for key, value in (
        ("issue", snyk_issue),
        (
            "priority",
            pack(
                score=_first(integer(priority.get("score")), integer(issue.get("priorityScore"))),
                factors=idents([f.get("name") for f in factors if isinstance(f, dict)])
                if isinstance(factors, list)
                else None,
            ),
        ),
        (
            "fix",
            pack(
                is_upgradable=flag(fix.get("isUpgradable")),
                is_pinnable=flag(fix.get("isPinnable")),
                is_patchable=flag(fix.get("isPatchable")),
                is_fixable=flag(fix.get("isFixable")),
                is_partially_fixable=flag(fix.get("isPartiallyFixable")),
                nearest_fixed_in_version=text(fix.get("nearestFixedInVersion"))
                or text(data.get("nearestFixedInVersion")),
                fixed_in=idents(fix.get("fixedIn")),
            ),
        ),
    ):
        if value is not None:
            snyk[key] = value
    event = {**facts.event, "action": action, "id": record_id, "kind": "alert", "dataset": "snyk.issues"}
    if severity:
        event["severity"] = sev.SCORE[severity]
    if url:
        event["reference"] = url
    package = pack(name=package_name, version=versions[0] if versions else None, type=facts.project_type)
    document: dict[str, Any] = {
        "@timestamp": facts.timestamp,
        "ecs": _ECS,
        "message": _message(action, severity, title or issue_id, package_name, versions, facts.project_name),
        "event": event,
        "vulnerability": vulnerability,
    }
    if package is not None:
        document["package"] = package
    document.update(facts.common)
    document["snyk"] = snyk
    return document


def summary_document(facts: SnapshotFacts, record_id: str, new: int, removed: int) -> dict[str, Any]:
    project = facts.project
    counts = obj(project.get("issueCountsBySeverity"))
    by_severity = {name: integer(counts.get(name)) for name in sev.ORDER}
    name = facts.project_name or ident(project.get("id")) or "unknown project"
    open_counts = ", ".join(f"{k} {v}" for k, v in reversed(by_severity.items()) if v is not None)
    snapshot = compact(
        {
            "new_issues": new,
            "resolved_issues": removed,
            "issue_counts": by_severity,
            "total_dependencies": integer(project.get("totalDependencies")),
            "last_tested": normalized(project.get("lastTestedDate")),
        }
    )
    message = f"Snyk tested {name}: {new} new, {removed} resolved" + (f"; open: {open_counts}" if open_counts else "")
    document: dict[str, Any] = {
        "@timestamp": facts.timestamp,
        "ecs": _ECS,
        "message": message,
        "event": {
            **(facts.event or {}),
            "action": "summary",
            "id": record_id,
            "kind": "event",
            "dataset": "snyk.snapshots",
        },
    }
    document.update(facts.common or {})
    document["snyk"] = {**(facts.snyk or {}), "snapshot": snapshot}
    return document


def _identifiers(value: Any) -> dict[str, list[str]]:
    """``{"CVE": [...], "CWE": [...], "NSP": [123]}`` → lower-case keys, string values, empties dropped."""
    result: dict[str, list[str]] = {}
    for key, items in obj(value).items():
        name = key.lower() if isinstance(key, str) and key.isalnum() and key.isascii() else _label_key(key)
        values = idents(items)
        if name and values:
            known = result.setdefault(name, [])
            known.extend(v for v in values if v not in known)
    return result


def _label_key(key: object) -> str:
    return _LABEL_KEY.sub("_", str(key)).strip("_").lower()


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
    project_name: str | None,
) -> str:
    verb = "Introduced" if action == "introduced" else "Resolved"
    parts = [verb, severity or "unknown-severity", "issue", f'"{title}"' if title else "(untitled)"]
    if package:
        parts += ["in", package + (f"@{versions[0]}" if versions else "")]
    if project_name:
        parts.append(f"({project_name})")
    return " ".join(parts)
