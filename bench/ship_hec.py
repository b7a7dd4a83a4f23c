"""Shipping throughput of the Splunk HEC output: records/s from a pre-filled buffer, with gzip.

The real pipeline runs in this process — ``SqliteBuffer`` → ``RecordStream`` (parse, flatten,
format, fit) → ``Shipper`` → ``HecOutput`` (envelopes, gzip, HTTPS keep-alive) — on uvloop, as
the daemon runs it. The receiver is a separate process (``--serve``): a minimal HTTP/1.1 server
over TLS that gunzips each body and counts events by their ``{"time":`` prefix instead of parsing
them, so it is not the bottleneck.

The buffer is filled before the clock starts (snapshots of realistic issues: the shape of
``forwarder/samples/snapshot_small.json`` with varied ids, packages, CVEs, severities and
300–1,500-character descriptions, so gzip sees text, not repetition). Then:

1. **measured run** — one shipper drains every record; records/s = records ÷ wall time from the
   shipper's start to the last delivery; the receiver's count must equal the records sent;
2. **profiled run** — a second output drains the same records with timers around each stage
   (buffer read, JSON parse, flatten, format, fit/budget, envelope encode, gzip, HTTP round trip),
   to show where the time goes. Timers cost a little; the headline figure is from run 1.

Run: ``.venv/bin/python bench/ship_hec.py`` (``--records 20000`` for a quicker run, ``--help``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import ssl
import sys
import tempfile
import zlib
from dataclasses import replace
from pathlib import Path

import httpx
from shipping import REPO, Stages, drain_with, filled_buffer, proc_cpu, write_tls

from forwarder.buffer import SqliteBuffer
from forwarder.config.model import DeliveryConfig
from forwarder.config.reader import Table
from forwarder.outputs import splunk_hec
from forwarder.outputs.splunk_hec import client as hec_client
from forwarder.outputs.splunk_hec.config import parse
from forwarder.outputs.splunk_hec.encode import HecEncoder

TOKEN = "0b7e5c1a-3f2d-4e6b-8a9c-1d2e3f4a5b6c"


# --- the receiver (a separate process) ---------------------------------------------------------------


async def _serve(cert: Path, key: Path) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    count = 0
    requests = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count, requests
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                path = lines[0].split(b" ")[1]
                headers = {}
                for line in lines[1:]:
                    if b":" in line:
                        name, value = line.split(b":", 1)
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get(b"content-length", b"0"))
                body = await reader.readexactly(length) if length else b""
                if headers.get(b"content-encoding") == b"gzip":
                    body = zlib.decompress(body, wbits=31)
                if path.endswith(b"/event"):
                    count += body.count(b'{"time":')
                    requests += 1
                    reply = b'{"text":"Success","code":0}'
                elif path == b"/count":
                    reply = b'{"count":%d,"requests":%d}' % (count, requests)
                else:
                    reply = b'{"text":"HEC is healthy","code":17}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(reply), reply)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, IndexError, ValueError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"port": port}), flush=True)
    async with server:
        await server.serve_forever()


def serve_main(cert: Path, key: Path) -> int:
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve(cert, key))
    return 0


# --- one run -----------------------------------------------------------------------------------------


async def drain(
    buffer: SqliteBuffer, name: str, url: str, ca_file: Path, total: int, level: int, stages: Stages | None
) -> dict[str, float]:
    table = {
        "endpoint": url,
        "token": TOKEN,
        "tls_ca_file": str(ca_file),
        "host": "bench",
        "compression": "gzip",
        "compression_level": level,
    }
    settings = parse(Table(table, f"outputs.{name}", REPO))
    # The buffer is pre-filled, so a partial batch only happens at the very end, where waiting
    # batch_timeout (1 s) for more records would be counted as shipping time: no waiting here.
    delivery: DeliveryConfig = replace(splunk_hec.TYPE.delivery_defaults, batch_timeout=0.0)
    output = splunk_hec.build(name, settings)

    def hec_stages(stages: Stages) -> None:
        stages.patch(HecEncoder, "body", "encode envelopes")
        stages.patch(hec_client, "gzip", "gzip")
        stages.patch(output, "_exchange", "HTTP round trip (incl. receiver)", is_async=True)

    done = await drain_with(output, delivery, buffer, name, total, stages, hec_stages)
    return {"wall": done.wall, "cpu": done.cpu, "shortened": float(done.shortened)}


async def bench(args: argparse.Namespace, workdir: Path) -> int:
    ca_file, cert_file, key_file = write_tls(workdir)
    buffer = await filled_buffer(workdir, args.records, args.per_snapshot)

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
    try:
        assert receiver.stdout is not None
        port = json.loads(await receiver.stdout.readline())["port"]
        url = f"https://127.0.0.1:{port}"
        context = httpx.create_ssl_context(verify=str(ca_file))
        before = proc_cpu(receiver.pid)
        result = await drain(buffer, "measured", url, ca_file, args.records, args.level, None)
        receiver_cpu = proc_cpu(receiver.pid) - before
        async with httpx.AsyncClient(verify=context) as client:
            counted = (await client.get(f"{url}/count")).json()
        rate = args.records / result["wall"]
        print()
        requests = counted["requests"]
        print(f"records shipped:     {args.records:,} (receiver counted {counted['count']:,} in {requests} requests)")
        print(f"wall time:           {result['wall']:.2f} s")
        print(f"THROUGHPUT:          {rate:,.0f} records/s   (target ≥ 50,000)")
        print(f"shipper process CPU: {result['cpu'] / result['wall'] * 100:.0f}% of one core")
        print(f"receiver CPU:        {receiver_cpu / result['wall'] * 100:.0f}% of one core (not the bottleneck)")
        print(f"records shortened:   {int(result['shortened'])}")
        ok = counted["count"] == args.records
        if not ok:
            print("!!! the receiver counted a different number of events")
        if not args.no_profile:
            stages = Stages()
            profiled = await drain(buffer, "profiled", url, ca_file, args.records, args.level, stages)
            print()
            print(f"where the time goes (profiled run: {args.records / profiled['wall']:,.0f} records/s with timers)")
            total = profiled["wall"]
            for name, seconds in sorted(stages.seconds.items(), key=lambda kv: -kv[1]):
                per = seconds / args.records * 1e6
                print(f"  {name:34s} {seconds:6.2f} s  {seconds / total * 100:5.1f}%  {per:6.1f} µs/record")
            accounted = sum(stages.seconds.values())  # the stages do not nest
            print(
                f"  {'everything else (loop, shipper)':34s} {total - accounted:6.2f} s  "
                f"{(total - accounted) / total * 100:5.1f}%"
            )
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"\npeak RSS of the shipper process: {peak:.0f} MiB")
        return 0 if ok else 1
    finally:
        receiver.terminate()
        await asyncio.wait_for(receiver.wait(), 10)
        await buffer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--per-snapshot", type=int, default=250, help="issues per snapshot (default 250)")
    parser.add_argument("--level", type=int, default=1, help="gzip level (default: the output default, 1)")
    parser.add_argument("--no-profile", action="store_true", help="skip the profiled second run")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cert", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--key", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve_main(args.cert, args.key)
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with tempfile.TemporaryDirectory(prefix="ship-hec-") as tmp, asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(bench(args, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
