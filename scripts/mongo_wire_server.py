"""A MongoDB-wire server for trying the cluster path on one machine (started by cluster.sh).

Runs mongoeco's wire-protocol proxy (https://pypi.org/project/mongoeco/) on 127.0.0.1 so that
pymongo, sacred's MongoObserver and seml talk to it as to a MongoDB server. It is a stand-in
for machines without MongoDB; real users point seml at a real MongoDB. Nothing in this project's
own code imports mongoeco: this file runs only inside the separate Python >= 3.13 venv that
`scripts/cluster.sh start` creates.

    python mongo_wire_server.py --port 27017 [--host 127.0.0.1] [--db-path FILE | --memory]

With --db-path the data lives in a SQLite file and survives a restart; --memory keeps it in RAM.
SIGTERM / SIGINT close the listener and the storage cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys


async def serve(host: str, port: int, db_path: str | None) -> None:
    from mongoeco.wire import AsyncMongoEcoProxyServer

    engine = None
    if db_path:
        from mongoeco.engines.sqlite import SQLiteEngine

        engine = SQLiteEngine(path=db_path)
    server = AsyncMongoEcoProxyServer(engine=engine, host=host, port=port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    address = await server.start()
    storage = f"sqlite file {db_path}" if db_path else "memory (lost on stop)"
    print(f"mongo-wire server listening on {address.host}:{address.port}; storage: {storage}",
          flush=True)
    try:
        await stop.wait()
    finally:
        print("mongo-wire server shutting down", flush=True)
        await server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=27017)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--db-path", help="SQLite file that keeps the data across restarts")
    group.add_argument("--memory", action="store_true", help="keep the data in memory only")
    args = parser.parse_args(argv)
    if sys.version_info < (3, 13):
        print(f"mongoeco needs Python >= 3.13, this is {sys.version.split()[0]}", file=sys.stderr)
        return 2
    asyncio.run(serve(args.host, args.port, None if args.memory else args.db_path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
