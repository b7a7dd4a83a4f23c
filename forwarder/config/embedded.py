"""The configuration ``serve`` uses when no ``--config`` is given: a trial that works alone.

HTTPS on 127.0.0.1:8443 with a generated local CA, a webhook secret generated on first start,
the buffer and a JSON-lines output in ``./state``. ``config/quickstart.toml`` in the repository
holds the same text (a test keeps them identical) as a starting point to copy.
"""

from __future__ import annotations

from pathlib import Path

from forwarder.config import Config, parse_config
from forwarder.config.reader import SecretUse

TEXT = """\
# snyk-forwarder quick-start configuration: everything local, nothing to set up.
# Relative paths are relative to this file's directory (or the working directory when
# this is the built-in default). See config/example.toml for every setting.

[listen]
address = "127.0.0.1"
port = 8443
path = "/webhooks/snyk"
tls_self_signed = true        # a local CA + certificate in state/tls/ (ca.pem is for curl --cacert)

[state]
directory = "state"

[webhook]
secret = { file = "state/webhook-secret", generate = true }

[outputs.local]
type = "file"
path = "state/records.jsonl"
"""


def embedded_config(base_dir: Path | None = None, *, secrets: SecretUse = "create") -> Config:
    return parse_config(TEXT, base_dir=base_dir or Path.cwd(), source="<embedded default>", secrets=secrets)
