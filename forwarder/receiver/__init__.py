"""The public HTTPS side: Starlette app, signature verification, request limits."""

from forwarder.receiver.app import WebhookEndpoint, build_app
from forwarder.receiver.verify import Verifier

__all__ = ["Verifier", "WebhookEndpoint", "build_app"]
