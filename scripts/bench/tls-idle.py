#!/usr/bin/env python3
"""Holds many idle TLS connections open to an https server, for bench-tls.sh's idle case.

Opens N connections (at most --in-flight handshakes at a time). Each completes a TLS handshake
(verifying the server's certificate against --cafile, name "localhost"), sends one
`GET / HTTP/1.1` and reads the whole response, so the server has finished the handshake,
sent its session tickets and served a request on every connection. Then it prints one line,
`ready OK FAILED VERSIONS`, and holds every connection open and idle until SIGTERM or SIGINT.
Exits 1 if any connection failed.

With --pause-file, it opens the first half, prints `half OK FAILED`, and waits until that file
exists before opening the second half: the caller reads the server's memory in between, so the
second half's cost per connection leaves out what the first connections paid once.

Usage: tls-idle.py --port PORT --connections N --cafile CERT [--host 127.0.0.1]
           [--pause-file PATH]
"""

import argparse
import asyncio
import collections
import os
import signal
import ssl
import sys

REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"


async def one(host, port, ctx, gate):
    """A connection that has done a handshake and one request: (reader, writer, version)."""
    async with gate:
        reader, writer = await asyncio.open_connection(
            host, port, ssl=ctx, server_hostname="localhost"
        )
        writer.write(REQUEST)
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 200 " not in status + b" ":
            raise RuntimeError(f"unexpected status line {status!r}")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        await reader.readexactly(length)
        version = writer.get_extra_info("ssl_object").version()
        return reader, writer, version


async def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--connections", type=int, required=True)
    p.add_argument("--cafile", required=True)
    p.add_argument("--in-flight", type=int, default=64)
    p.add_argument("--pause-file")
    args = p.parse_args()

    ctx = ssl.create_default_context(cafile=args.cafile)
    gate = asyncio.Semaphore(args.in_flight)

    async def batch(n):
        return await asyncio.gather(
            *(one(args.host, args.port, ctx, gate) for _ in range(n)),
            return_exceptions=True,
        )

    results = []
    if args.pause_file:
        results = await batch(args.connections // 2)
        failed = sum(isinstance(r, BaseException) for r in results)
        print(f"half {len(results) - failed} {failed}", flush=True)
        while not os.path.exists(args.pause_file):
            await asyncio.sleep(0.05)
    results += await batch(args.connections - len(results))
    held = [r for r in results if not isinstance(r, BaseException)]
    failed = [r for r in results if isinstance(r, BaseException)]
    versions = collections.Counter(v for _, _, v in held)
    for e in failed[:3]:
        print(f"tls-idle: connection failed: {e!r}", file=sys.stderr)
    print(
        f"ready {len(held)} {len(failed)} "
        + ",".join(f"{v}:{n}" for v, n in sorted(versions.items())),
        flush=True,
    )

    # Idle until SIGTERM or SIGINT.
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    await done.wait()
    for _, writer, _ in held:
        writer.transport.abort()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
