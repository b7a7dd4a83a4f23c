"""``check-config --probe``: try each output's health check before the daemon is started."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from forwarder.config import OutputConfig
from forwarder.errors import ForwarderError
from forwarder.outputs import OUTPUT_TYPES


async def probe_outputs(outputs: Sequence[OutputConfig], timeout: float = 15.0) -> dict[str, str | None]:
    """``{output name: None if reachable, else what went wrong}``, probing all at once."""

    async def one(config: OutputConfig) -> str | None:
        output = OUTPUT_TYPES[config.type].build(config.name, config.settings)
        try:
            async with asyncio.timeout(timeout):
                await output.healthcheck()
        except TimeoutError:
            return f"no answer within {timeout:g}s"
        except (ForwarderError, OSError) as exc:
            return str(exc)
        finally:
            await output.aclose()
        return None

    results = await asyncio.gather(*(one(c) for c in outputs))
    return {c.name: r for c, r in zip(outputs, results, strict=True)}
