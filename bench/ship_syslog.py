"""Shipping throughput of the syslog output: records/s from a pre-filled buffer over TLS.

The real pipeline runs in this process — ``SqliteBuffer`` → ``RecordStream`` (parse, flatten,
format ECS JSON, fit to max_message_bytes) → ``Shipper`` → the syslog output (RFC 5424 headers,
octet counting, TLS, wait for the receiver's TCP acknowledgement) — on uvloop, as the daemon runs
it. The receiver is a separate process (``--serve``): a TLS server that splits the octet-counted
stream into frames and counts them without parsing, so it is not the bottleneck. At the end its
count must equal the records shipped.

Run: ``.venv/bin/python bench/ship_syslog.py`` (``--records 20000`` for a quicker run, ``--help``).
Target: ≥ 30,000 records/s on one core (issue 3).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import signal
import ssl
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from shipping import REPO, Stages, drain_with, filled_buffer, proc_cpu, write_tls

from forwarder.buffer import SqliteBuffer
from forwarder.config.model import DeliveryConfig
from forwarder.outputs import syslog
from forwarder.outputs.stream import StreamConnection
from forwarder.outputs.syslog.config import SyslogSettings
from forwarder.outputs.syslog.encode import SyslogEncoder

# --- the receiver (a separate process) ---------------------------------------------------------------


async def _serve(cert: Path, key: Path) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    frames = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal frames
        pending = b""
        while chunk := await reader.read(1 << 20):
            pending += chunk
            at = 0
            while True:  # octet counting: "LEN SP MSG" back to back
                space = pending.find(b" ", at, at + 12)
                if space < 0:
                    break
                end = space + 1 + int(pending[at:space])
                if end > len(pending):
                    break
                frames += 1
                at = end
            pending = pending[at:]
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()
    await asyncio.sleep(0.2)  # let handlers read what is already in their buffers
    print(json.dumps({"frames": frames}), flush=True)


# --- one run -----------------------------------------------------------------------------------------


async def drain(
    buffer: SqliteBuffer, name: str, port: int, ca_file: Path, total: int, stages: Stages | None
) -> dict[str, float]:
    settings = SyslogSettings(
        host="127.0.0.1", port=port, transport="tls", hostname="bench", tls_ca_file=ca_file, max_message_bytes=65536
    )
    # The buffer is pre-filled: waiting batch_timeout for more records at the end would be counted
    # as shipping time.
    delivery: DeliveryConfig = replace(syslog.TYPE.delivery_defaults, batch_timeout=0.0)
    output = syslog.build(name, settings)

    def syslog_stages(stages: Stages) -> None:
        stages.patch(SyslogEncoder, "frame", "syslog header + framing")
        stages.patch(StreamConnection, "send", "TLS write + wait for TCP ack", is_async=True)

    done = await drain_with(output, delivery, buffer, name, total, stages, syslog_stages)
    return {"wall": done.wall, "cpu": done.cpu}


async def bench(args: argparse.Namespace, workdir: Path) -> int:
    ca_file, cert_file, key_file = write_tls(workdir)
    buffer = await filled_buffer(workdir, args.records, args.per_snapshot)
    runs = [("measured", None)] + ([] if args.no_profile else [("profiled", Stages())])
    results = []
    try:
        for name, stages in runs:
            receiver = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--serve",
                "--cert",
                str(cert_file),
                "--key",
                str(key_file),
                stdout=asyncio.subprocess.PIPE,
                cwd=REPO,
            )
            assert receiver.stdout is not None
            port = json.loads(await receiver.stdout.readline())["port"]
            before = proc_cpu(receiver.pid)
            result = await drain(buffer, name, port, ca_file, args.records, stages)
            result["receiver_cpu"] = proc_cpu(receiver.pid) - before
            receiver.send_signal(signal.SIGTERM)
            result["frames"] = json.loads(await asyncio.wait_for(receiver.stdout.readline(), 30))["frames"]
            await asyncio.wait_for(receiver.wait(), 10)
            results.append((name, stages, result))
    finally:
        await buffer.close()
    (_, _, measured) = results[0]
    rate = args.records / measured["wall"]
    print()
    print(f"records shipped:     {args.records:,} (receiver counted {int(measured['frames']):,} frames)")
    print(f"wall time:           {measured['wall']:.2f} s")
    print(f"THROUGHPUT:          {rate:,.0f} records/s over TLS   (target ≥ 30,000)")
    print(f"shipper process CPU: {measured['cpu'] / measured['wall'] * 100:.0f}% of one core")
    print(f"receiver CPU:        {measured['receiver_cpu'] / measured['wall'] * 100:.0f}% of one core")
    ok = all(int(r["frames"]) == args.records for _, _, r in results)
    if not ok:
        print("!!! the receiver counted a different number of frames")
    for _name, stages, profiled in results[1:]:
        assert stages is not None
        total = profiled["wall"]
        print(f"\nwhere the time goes (profiled run: {args.records / total:,.0f} records/s with timers)")
        for stage, seconds in sorted(stages.seconds.items(), key=lambda kv: -kv[1]):
            print(
                f"  {stage:34s} {seconds:6.2f} s  {seconds / total * 100:5.1f}%  "
                f"{seconds / args.records * 1e6:6.1f} µs/record"
            )
        rest = total - sum(stages.seconds.values())
        print(f"  {'everything else (loop, shipper)':34s} {rest:6.2f} s  {rest / total * 100:5.1f}%")
    print(f"\npeak RSS of the shipper process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--per-snapshot", type=int, default=25, help="issues per snapshot")
    parser.add_argument("--no-profile", action="store_true", help="skip the second, timed run")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cert", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--key", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        if args.serve:
            runner.run(_serve(args.cert, args.key))
            return 0
        with tempfile.TemporaryDirectory(prefix="snyk-fwd-bench-") as tmp:
            return runner.run(bench(args, Path(tmp)))


if __name__ == "__main__":
    raise SystemExit(main())
