"""The `wai` command: `wai serve`, `wai prepare` and `wai loadtest`."""

from __future__ import annotations

import argparse
import logging
import sys

from server.config import Settings, load_settings
from server.records import log_one_json_object_per_line

log = logging.getLogger("wai")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wai", description="Workers AI and OpenAI APIs on vLLM")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the models of a config")
    serve.add_argument("--config", required=True, help="YAML config, e.g. configs/default.yaml")
    serve.add_argument("--host", help="address to bind (default: the config's, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default: the config's, 8000)")
    serve.add_argument("--insecure", action="store_true", help="allow a non-loopback address without API keys")
    serve.set_defaults(run=run_serve)

    prepare = commands.add_parser("prepare", help="fetch and convert every model a config names")
    prepare.add_argument("--config", default="configs/default.yaml")
    prepare.set_defaults(run=run_prepare)

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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log_one_json_object_per_line()
    return args.run(args)


def _load(args: argparse.Namespace, **overrides) -> Settings | None:
    try:
        return load_settings(args.config, **{k: v for k, v in overrides.items() if v is not None})
    except (OSError, ValueError) as exc:
        print(f"wai: bad config {args.config}: {exc}", file=sys.stderr)
        return None


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from server.auth import UnsafeBind, check_bind
    from server.prepare import PrepareError
    from server.serving.lora_checks import BaseModelUnreadable

    settings = _load(args, host=args.host, port=args.port)
    if settings is None:
        return 2
    try:
        check_bind(settings.host, settings.api_keys, args.insecure)
        from server.app import create_app

        app = create_app(settings)
    except (UnsafeBind, PrepareError, BaseModelUnreadable) as exc:
        print(f"wai: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(
        app, host=settings.host, port=settings.port, log_level="info", timeout_graceful_shutdown=10, access_log=False
    )
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
