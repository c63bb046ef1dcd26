"""The `wai` command: `wai serve`, `wai prepare`, `wai migrate`, `wai plan` and `wai loadtest`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn

from server.config import Settings, load_settings
from server.lifecycle import Lifecycle
from server.records import log_one_json_object_per_line

if TYPE_CHECKING:
    import socket

    import psycopg
    from fastapi import FastAPI

    from server.app import FrontEnd

log = logging.getLogger("wai")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wai", description="Workers AI and OpenAI APIs on vLLM")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the models of a config")
    serve.add_argument("--config", required=True, help="YAML config, e.g. configs/default.yaml")
    serve.add_argument("--host", help="address to bind (default: the config's, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default: the config's, 8000)")
    serve.add_argument("--insecure", action="store_true", help="allow a non-loopback address without API keys")
    serve.add_argument(
        "--api-processes",
        type=int,
        help="front-end processes sharing each model's engine (default: the config's api_processes, 1)",
    )
    serve.set_defaults(run=run_serve)

    prepare = commands.add_parser("prepare", help="fetch and convert every model a config names")
    prepare.add_argument("--config", default="configs/default.yaml")
    prepare.set_defaults(run=run_prepare)

    migrate = commands.add_parser("migrate", help="bring the shared database's schema (database_url) up to date")
    migrate.add_argument("--config", required=True, help="YAML config; WAI_DATABASE_URL sets database_url too")
    migrate.add_argument(
        "--wait",
        type=float,
        default=0,
        metavar="SECONDS",
        help="retry an unreachable database this long before giving up (an init container's start)",
    )
    migrate.set_defaults(run=run_migrate)

    from server import plan as plan_cli

    plan = commands.add_parser(
        "plan", description=plan_cli.__doc__, help="what a config needs of a GPU: memory, KV cache, concurrency"
    )
    plan_cli.add_arguments(plan)
    plan.set_defaults(run=plan_cli.run)

    from loadtests import cli as loadtest_cli

    loadtest = commands.add_parser(
        "loadtest",
        description=loadtest_cli.__doc__,
        help="measure latency and throughput of servers, side by side",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    loadtest_cli.add_arguments(loadtest)
    loadtest.set_defaults(run=loadtest_cli.run)

    args = parser.parse_args(argv)
    configure_logging()
    return args.run(args)


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log_one_json_object_per_line()


def _load(args: argparse.Namespace, **overrides) -> Settings | None:
    try:
        return load_settings(args.config, **{k: v for k, v in overrides.items() if v is not None})
    except (OSError, ValueError) as exc:
        print(f"wai: bad config {args.config}: {exc}", file=sys.stderr)
        return None


def run_serve(args: argparse.Namespace) -> int:
    from server.auth import UnsafeBind, check_bind
    from server.engine.types import UnsupportedVllm
    from server.prepare import PrepareError
    from server.serving.lora_checks import BaseModelUnreadable

    settings = _load(args, host=args.host, port=args.port, api_processes=args.api_processes)
    if settings is None:
        return 2
    try:
        check_bind(settings.host, settings.has_keys, args.insecure)
        from server.engine import vllm_compat  # refuses a vLLM outside wai's range, before any process starts

        log.info("vLLM %s", vllm_compat.VERSION)
        if settings.api_processes > 1:
            from server import frontends

            return frontends.serve(settings, run_front_end)
        from server.app import create_app

        app = create_app(settings)
    except (UnsafeBind, PrepareError, BaseModelUnreadable, UnsupportedVllm) as exc:
        print(f"wai: {exc}", file=sys.stderr)
        return 2
    return serve_app(app, settings)


# After the drain, uvicorn's own graceful shutdown: the cut requests' last events go out (deploy/ sizes
# the pods' and containers' grace periods from it, tests/deploy/facts.py).
HTTP_SHUTDOWN_S = 5


def serve_app(app: FastAPI, settings: Settings, sockets: list[socket.socket] | None = None) -> int:
    """Serve `app` until it drains (or its engine dies); its exit code. On `sockets` when given (a
    front end of several), else on the configured host and port."""
    server = DrainingServer(server_config(app, settings), app.state.lifecycle)
    server.run(sockets)
    return app.state.lifecycle.exit_code


def server_config(app: FastAPI, settings: Settings, **options: Any) -> uvicorn.Config:
    """uvicorn as wai runs it: its HTTP protocol with the connection's defences (server/api/connections.py),
    and TLS when configured. Requests are drained before uvicorn shuts down (server/lifecycle.py); what
    is left then is a connection that never sent a request, or a client that stopped reading."""
    from server.api.connections import guarded_http

    tls = settings.tls
    return uvicorn.Config(
        app,
        **{
            "host": settings.host,
            "port": settings.port,
            "log_level": "info",
            "access_log": False,
            "timeout_graceful_shutdown": HTTP_SHUTDOWN_S,
            "http": guarded_http(settings.limits),
            "timeout_keep_alive": settings.limits.keep_alive_timeout_s,
            "ssl_certfile": str(tls.certfile) if tls.certfile else None,
            "ssl_keyfile": str(tls.keyfile) if tls.keyfile else None,
            **options,
        },
    )


def run_front_end(fields: dict[str, Any], sock: socket.socket, front_end: FrontEnd) -> None:
    """The main of one of several front-end processes (server/frontends.py): wai's app, its engines
    clients of the supervisor's, served on the supervisor's socket."""
    from server import frontends
    from server.app import create_app

    frontends.become_front_end()
    configure_logging()
    settings = Settings(**fields)
    sys.exit(serve_app(create_app(settings, front_end=front_end), settings, [sock]))


class DrainingServer(uvicorn.Server):
    """uvicorn, stopping as wai does: the first SIGTERM or SIGINT drains the requests in flight
    (server/lifecycle.py) and then exits; a second one stops at once."""

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle):
        super().__init__(config)
        self.lifecycle = lifecycle
        lifecycle.request_exit = self.stop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task | None = None

    def stop(self) -> None:
        self.should_exit = True

    async def serve(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # uvicorn's own handler would stop accepting at once and re-raise the signal on exit.
        if self.lifecycle.draining or self._loop is None:  # a second signal, or one before serving
            log.warning("stopping now")
            self.should_exit = self.force_exit = True
            return
        self.lifecycle.draining = True  # /readyz and new requests answer 503 from now on
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._drain = asyncio.ensure_future(self.lifecycle.drain())


def run_prepare(args: argparse.Namespace) -> int:
    from server.prepare import PrepareError, prepare

    settings = _load(args)
    if settings is None:
        return 2
    for model in settings.models:
        try:
            prepare(model, settings.cache_dir)
        except PrepareError as exc:
            print(f"wai prepare: {exc}", file=sys.stderr)
            return 1
    return 0


# Between two attempts to reach the database under `wai migrate --wait`.
MIGRATE_RETRY_S = 2.0


def run_migrate(args: argparse.Namespace) -> int:
    """Apply the schema's missing migrations once, for a deployment that migrates before its replicas
    start (they would also migrate by themselves): 0 done, 1 unreachable or too new, 2 no database."""
    settings = _load(args)
    if settings is None:
        return 2
    if not settings.database_url:
        print(f"wai migrate: {args.config} sets no database_url (nor does WAI_DATABASE_URL)", file=sys.stderr)
        return 2
    return asyncio.run(_migrate(settings.database_url, args.wait, settings.cluster.store_timeout_s))


async def _migrate(url: str, wait_s: float, timeout_s: float) -> int:
    import psycopg

    from server.stores.postgres import DatabaseTooNew, migrate, migrations

    try:
        async with await _connect_within(url, wait_s, timeout_s) as connection:
            applied = await migrate(connection)
    except psycopg.OperationalError as exc:  # never the URL: it may hold a password
        print(f"wai migrate: the database is unreachable: {exc}", file=sys.stderr)
        return 1
    except DatabaseTooNew as exc:
        print(f"wai migrate: {exc}; run a wai at least as new as the one that migrated it", file=sys.stderr)
        return 1
    for name in applied:
        print(f"applied {name}")
    if not applied:
        print(f"the schema is current ({len(migrations())} migrations)")
    return 0


async def _connect_within(url: str, wait_s: float, timeout_s: float) -> psycopg.AsyncConnection:
    """A connection, trying again until `wait_s` has passed (the database may start after this pod)."""
    import psycopg

    deadline = time.monotonic() + wait_s
    while True:
        try:
            return await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=max(1, round(timeout_s)))
        except psycopg.OperationalError as exc:
            if time.monotonic() + MIGRATE_RETRY_S > deadline:
                raise
            log.warning("the database is unreachable, trying again in %.0f s: %s", MIGRATE_RETRY_S, exc)
            await asyncio.sleep(MIGRATE_RETRY_S)


if __name__ == "__main__":
    sys.exit(main())
