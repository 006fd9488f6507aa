"""Quick same-process ratio: each user page's requests/s over the trivial view's on ONE web process.

One ``manage.py serve --no-scheduler`` process (daphne, DEBUG off) on PostgreSQL with the demo
data, no scheduler; logged-in aiohttp clients request one page at a time in a loop for
``--seconds``; the trivial view (``/favicon.ico``) and the pages alternate for ``--rounds`` rounds
so that the shared machine's drift hits them alike, and the ratio is each page's total requests
over the trivial view's. It is the quick harness for iterating on page cost (``bench/web_load.py``
measures the full production topology); with ``--hold`` it keeps the server up and prints its pid
for a profiler (``py-spy record --pid <pid> ...``) while you load it yourself.
With ``--floor`` it also measures the floor probes of ``bench/floor_urls.py`` (a constant page, one
query, a login and a constant page): what any logged-in page costs at least on this process.

    # a private PostgreSQL and Redis as in bench/web_load.py's docstring, then:
    .venv/bin/python bench/web_ratio.py --pg postgres://postgres@127.0.0.1:5502 --redis redis://127.0.0.1:6402/0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import web_load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pg", required=True, help="PostgreSQL server URL without database (a private instance)")
    parser.add_argument("--redis", required=True, help="Redis URL (a private instance)")
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=4.0, help="duration of each page in each round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all pages")
    parser.add_argument("--pool", type=int, default=4, help="DB_POOL_MAX_SIZE of the web process")
    parser.add_argument("--port", type=int, default=8221)
    parser.add_argument("--hold", action="store_true", help="start the server, print its pid, wait for Ctrl-C")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also measure the floor probes of bench/floor_urls.py (what any logged-in page costs at least)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    env = web_load.setup(args)
    pages = web_load.user_pages()
    if args.floor:
        from floor_urls import PROBES

        pages[1:1] = PROBES
        env = {**env, "DJANGO_SETTINGS_MODULE": "bench.floor_settings"}
    cookies = [web_load.session_cookie("alice")]
    from django.db import connection

    connection.close()
    logs = Path(tempfile.mkdtemp(prefix="bench-ratio-"))
    proc = web_load.start(["serve", "--no-scheduler", "--port", str(args.port)], env, "web-1", logs / "web-1.log")
    totals = {label: [0, 0.0] for label, _, _ in pages}
    errors = 0
    try:
        web_load.wait_port(args.port)
        if args.hold:
            print(f"serve pid {proc.pid} on port {args.port}; cookie sessionid={cookies[0]}", flush=True)
            for label, path, _ in pages:
                print(f"  {label}: {path}")
            proc.wait()
            return
        # warm-up: templates, caches and the pool
        for _, path, expect in pages:
            asyncio.run(web_load.load([args.port], path, expect, cookies, 4, 1.0))
        for _ in range(args.rounds):
            for label, path, expect in pages:
                result = asyncio.run(web_load.load([args.port], path, expect, cookies, args.clients, args.seconds))
                totals[label][0] += result["requests"]
                totals[label][1] += args.seconds
                errors += sum(result["errors"].values())
                print(json.dumps({"page": label, **result}), flush=True)
        if proc.poll() is not None:
            raise SystemExit(f"the web process exited (code {proc.returncode}); see {logs}")
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    trivial = totals[pages[0][0]][0] / totals[pages[0][0]][1]
    print()
    print(f"{args.clients} clients, {args.rounds} rounds of {args.seconds:g} s per page, errors {errors}")
    print("| page | req/s | x trivial |")
    print("|---|---|---|")
    summary = {}
    for label, (count, seconds) in totals.items():
        rps = count / seconds
        summary[label] = {"rps": rps, "ratio": rps / trivial}
        print(f"| {label} | {rps:.0f} | {rps / trivial:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"errors": errors, "pages": summary}, indent=1))


if __name__ == "__main__":
    main()
