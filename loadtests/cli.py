"""`wai loadtest`: options, and the run from options to reports.

One target:  wai loadtest --url http://127.0.0.1:8000 --protocol workers-ai \
                 --model @cf/meta/llama-3-8b-instruct --concurrency 1,4,16 --out results
Comparison:  repeat --url (and --protocol, --model, --api-key, --label where they differ); the first
             target is the base of every ratio.
Sweep:       wai loadtest --sweep --url http://127.0.0.1:8000 --max-concurrency 256 --out results
             (1, 2, 4, ... streams until throughput stops growing while latency climbs; the knee, and the
             engine's metrics at each level, in report.md, report.json and report.html)
Soak:        wai loadtest --soak --url http://127.0.0.1:8000 --pid <server pid> --concurrency 4 \
                 --duration 1800 --cancel-rate 0.2 --output-tokens 32
             (verdicts on errors, the engine's queues after the load and the server's memory growth;
             exits 1 when one fails)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtests.knee import MIN_GAIN, PAST_KNEE, sweep_levels
from loadtests.protocols import PROTOCOLS

SWEEP_CAP = 512  # past vLLM's default batch of 256 sequences on a GPU, so that its knee shows


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a share from 0 to below 1, got {text!r}")
    return value


def _numbers(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_argument_group(
        "targets (repeat --url to compare; other target options given once apply to every target)"
    )
    target.add_argument(
        "--url",
        action="append",
        required=True,
        help="server root or API base URL, e.g. http://127.0.0.1:8000 or .../v1",
    )
    target.add_argument(
        "--protocol",
        action="append",
        choices=list(PROTOCOLS),
        help="wire format: the Workers AI run endpoint or OpenAI chat completions (default workers-ai)",
    )
    target.add_argument("--model", action="append", help="model name (default @cf/meta/llama-3-8b-instruct)")
    target.add_argument("--api-key", action="append", help="bearer token (default: $WAI_API_KEY)")
    target.add_argument("--label", action="append", help="name of the target in reports (default A, B, ...)")
    target.add_argument(
        "--metrics-url",
        action="append",
        help="the target's Prometheus metrics, read by --sweep and --soak (default: <root of --url>/metrics)",
    )
    target.add_argument("--metrics-key", action="append", help="bearer key for the metrics, when they need one")

    load = parser.add_argument_group("load")
    loop = load.add_mutually_exclusive_group()
    loop.add_argument("--concurrency", type=_numbers, help="closed loop: requests in flight, e.g. 1,4,16 (default 1)")
    loop.add_argument(
        "--rate",
        type=_numbers,
        help="open loop: request rates per second, e.g. 1,2,4 (inf sends all at once)",
    )
    loop.add_argument(
        "--sweep",
        action="store_true",
        help="closed loop at 1, 2, 4, ... streams up to --max-concurrency, until saturated (see 'sweep' below)",
    )
    load.add_argument(
        "--burstiness",
        type=float,
        default=1.0,
        help="open loop: 1 for Poisson arrivals, below 1 burstier, above 1 steadier",
    )
    load.add_argument(
        "--max-concurrency",
        type=int,
        help=f"open loop: cap on requests in flight; --sweep: the highest concurrency tried (default {SWEEP_CAP})",
    )
    amount = load.add_mutually_exclusive_group()
    amount.add_argument(
        "--num-requests",
        type=_numbers,
        help="requests per target at each level, one count or one per level (default 32; --sweep: one count, "
        "at least 8 per stream)",
    )
    amount.add_argument("--duration", type=float, help="seconds per level and target, instead of a count")
    load.add_argument("--warmup", type=int, default=2, help="requests per target before measuring (default 2)")
    load.add_argument(
        "--rounds",
        type=int,
        help="interleaved rounds per level when comparing (default: waves of 2x concurrency)",
    )
    load.add_argument("--timeout", type=float, default=600.0, help="seconds before a request is abandoned")
    load.add_argument(
        "--light",
        action="store_true",
        help="count output events without JSON-decoding each one (only the first, the last two and errors "
        "are decoded): less load generator CPU per token, for many streams on a fast server",
    )
    load.add_argument(
        "--processes",
        type=int,
        default=1,
        help="closed loop: load generator processes sharing the streams, for more than one core drives (default 1)",
    )
    load.add_argument(
        "--cancel-rate",
        type=_share,
        default=0.0,
        help="share of requests whose client drops the connection after a random number of output events "
        "(0 to max tokens - 1, drawn with --seed); reported as cancelled, not as errors (default 0)",
    )

    prompts = parser.add_argument_group("prompts")
    prompts.add_argument(
        "--prompts",
        choices=["chat", "synthetic"],
        default="chat",
        help="the bundled realistic chat prompts, or random text of --input-tokens",
    )
    prompts.add_argument("--input-tokens", type=int, default=128, help="synthetic prompt length in tokens")
    prompts.add_argument("--output-tokens", type=int, default=128, help="max_tokens of every request")
    prompts.add_argument("--tokenizer", help="tokenizer to make synthetic prompts exactly --input-tokens long")
    prompts.add_argument(
        "--ignore-eos",
        action="store_true",
        help="OpenAI protocol: ask vLLM-based servers to always generate --output-tokens",
    )
    prompts.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        help="sampling temperature (default 0: every target gives the same output)",
    )
    prompts.add_argument("--seed", type=int, default=0, help="seeds the prompts and the arrival times")

    report = parser.add_argument_group("report")
    report.add_argument("--slo", help="goodput bounds in ms, e.g. ttft=500,tpot=50")
    report.add_argument("--out", type=Path, help="report folder (default loadtest-results/<time>)")
    report.add_argument("--no-progress", action="store_true", help="no progress bar")

    soak = parser.add_argument_group(
        "soak (--soak: one target, one --concurrency, for --duration; verdicts in the report, exit 1 on a failure)"
    )
    soak.add_argument(
        "--soak",
        action="store_true",
        help="soak mode: pass only when no request failed (cancellations aside), the engine's running and "
        "waiting counts are back to 0 after the load, and the server's memory grew less than --max-rss-growth "
        "after --rss-warmup",
    )
    soak.add_argument("--pid", type=int, help="the server's process id: its resident memory, children included")
    soak.add_argument(
        "--serve",
        metavar="CMD",
        help="start the server with CMD instead ({port} in CMD and --url: a free loopback port), "
        "wait for its /readyz, stop it with SIGTERM after",
    )
    soak.add_argument("--serve-timeout", type=float, default=900.0, help="seconds for --serve to become ready")
    soak.add_argument(
        "--rss-warmup",
        type=float,
        help="seconds of load before the memory baseline is sampled (default: a fifth of --duration, at most 300)",
    )
    soak.add_argument(
        "--max-rss-growth",
        type=float,
        default=10.0,
        help="percent the memory may grow from the baseline to the end of the load (default 10)",
    )
    soak.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        help="seconds for the engine's running and waiting counts to reach 0 after the load (default 60)",
    )

    sweep = parser.add_argument_group(
        "sweep (--sweep: where each target stops growing; levels interleaved across targets as usual)"
    )
    sweep.add_argument(
        "--knee-gain",
        type=_share,
        default=MIN_GAIN,
        help="throughput rise per doubling of the streams below which it has stopped growing (default 0.1)",
    )
    sweep.add_argument(
        "--past-knee",
        type=int,
        default=PAST_KNEE,
        help="levels measured past the knee before stopping (default 2); the sweep also stops at failed "
        "requests or falling throughput",
    )
    sweep.add_argument(
        "--scrape-interval",
        type=float,
        default=1.0,
        help="seconds between reads of the target's /metrics while it is driven (default 1)",
    )


def metrics_sources(args: argparse.Namespace, targets) -> dict[str, tuple[str, dict[str, str]]]:
    """Each target's /metrics URL and the headers to read it with, by label."""
    from loadtests.engine_metrics import metrics_url

    urls = _per_target(args.metrics_url, None, "--metrics-url", len(targets))
    keys = _per_target(args.metrics_key, None, "--metrics-key", len(targets))
    return {
        t.label: (url or metrics_url(t.url), {"Authorization": f"Bearer {key}"} if key else {})
        for t, url, key in zip(targets, urls, keys, strict=True)
    }


def _per_target(given: list[str] | None, default: str | None, option: str, count: int) -> list[Any]:
    values: list[Any] = given or [default]
    if len(values) == 1:
        return values * count
    if len(values) != count:
        raise ValueError(f"{option} given {len(values)} times for {count} --url; give it once or once per --url")
    return values


def targets_from(args: argparse.Namespace):
    from loadtests.protocols import Target

    count = len(args.url)

    def per_target(given: list[str] | None, default: str | None, option: str) -> list[Any]:
        return _per_target(given, default, option, count)

    protocols = per_target(args.protocol, "workers-ai", "--protocol")
    models = per_target(args.model, "@cf/meta/llama-3-8b-instruct", "--model")
    keys = per_target(args.api_key, os.environ.get("WAI_API_KEY"), "--api-key")
    labels = per_target(args.label, None, "--label")
    labels = [label or chr(ord("A") + i) for i, label in enumerate(labels)]
    if len(set(labels)) != count:
        raise ValueError("every target needs its own --label")
    return [Target(lb, u, p, m, k) for lb, u, p, m, k in zip(labels, args.url, protocols, models, keys, strict=True)]


def plan_from(args: argparse.Namespace):
    from loadtests.runner import LoadPlan

    if args.sweep:
        return sweep_plan(args)
    levels = args.rate or args.concurrency or [1.0]
    counts = None if args.duration else [int(n) for n in (args.num_requests or [32])]
    if counts is not None and len(counts) not in (1, len(levels)):
        raise ValueError("--num-requests takes one count, or one per level")
    num_requests: int | list[int] | None = counts[0] if counts is not None and len(counts) == 1 else counts
    if args.rate is None and any(not v.is_integer() for v in levels):
        raise ValueError("--concurrency takes whole numbers")
    return LoadPlan(
        mode="open" if args.rate else "closed",
        levels=levels,
        num_requests=num_requests,
        duration_s=args.duration,
        warmup=args.warmup,
        rounds=args.rounds,
        burstiness=args.burstiness,
        max_concurrency=args.max_concurrency,
        timeout_s=args.timeout,
        seed=args.seed,
        cancel_rate=args.cancel_rate,
        light=args.light,
        processes=args.processes,
    )


def sweep_plan(args: argparse.Namespace):
    from loadtests.runner import LoadPlan
    from loadtests.sweep import requests_per_level

    if args.num_requests and len(args.num_requests) != 1:
        raise ValueError("--sweep takes one --num-requests count, used at every level")
    if args.past_knee < 1:
        raise ValueError("--past-knee must be at least 1")
    if args.scrape_interval <= 0:
        raise ValueError("--scrape-interval must be positive")
    levels = sweep_levels(SWEEP_CAP if args.max_concurrency is None else args.max_concurrency)
    counts = None if args.duration else requests_per_level(levels, int((args.num_requests or [32])[0]))
    return LoadPlan(
        mode="closed",
        levels=[float(level) for level in levels],
        num_requests=counts,
        duration_s=args.duration,
        warmup=args.warmup,
        # Comparing: two rounds (each target goes first once) of four waves or more each, so that the
        # drain at the end of each round weighs as little on every level as on one target's.
        rounds=args.rounds or (2 if len(args.url) > 1 else None),
        timeout_s=args.timeout,
        seed=args.seed,
        cancel_rate=args.cancel_rate,
        light=args.light,
        processes=args.processes,
    )


def prompts_from(args: argparse.Namespace, plan) -> list:
    from loadtests import prompts

    if args.prompts == "chat":
        return prompts.chat_prompts(args.output_tokens)
    count = max(*(plan.requests_at(level) or 256 for level in plan.levels), args.warmup, 1)
    tokenizer = prompts.load_tokenizer(args.tokenizer) if args.tokenizer else None
    return prompts.synthetic_prompts(count, args.input_tokens, args.output_tokens, args.seed, tokenizer)


def options_record(args: argparse.Namespace) -> dict[str, Any]:
    """The options as given, for the report; API keys left out."""
    record = {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in vars(args).items()
        if k not in ("api_key", "metrics_key", "run", "command")
    }
    record["argv"] = _redact(sys.argv[1:])
    return record


SECRETS = ("--api-key", "--metrics-key")


def _redact(argv: list[str]) -> list[str]:
    out, hide = [], False
    for a in argv:
        out.append("***" if hide else (a.split("=", 1)[0] + "=***" if a.startswith(SECRETS) and "=" in a else a))
        hide = a in SECRETS
    return out


def run(args: argparse.Namespace) -> int:
    from loadtests import report
    from loadtests.progress import Progress
    from loadtests.protocols import Sampling
    from loadtests.runner import run_load
    from loadtests.stats import SLO

    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    if args.soak:
        from loadtests import soak

        if problems := soak.problems(args):
            print("\n".join(f"wai loadtest: {p}" for p in problems), file=sys.stderr)
            return 2
        soak.substitute_port(args)
    try:
        targets = targets_from(args)
        plan = plan_from(args)
        slo = SLO.parse(args.slo) if args.slo else None
        prompt_set = prompts_from(args, plan)
    except (ValueError, OSError) as exc:
        print(f"wai loadtest: {exc}", file=sys.stderr)
        return 2
    if args.ignore_eos and any(t.protocol == "workers-ai" for t in targets):
        print(
            "wai loadtest: note: the Workers AI protocol has no ignore_eos; those targets stop at end of sequence",
            file=sys.stderr,
        )
    sampling = Sampling(temperature=args.temperature, seed=None, ignore_eos=args.ignore_eos)
    out = args.out or Path("loadtest-results") / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if args.soak:
        source = metrics_sources(args, targets)[targets[0].label]
        return soak.run(args, targets, plan, prompt_set, sampling, slo, out, options_record(args), source)
    if args.sweep:
        return run_sweep(args, targets, plan, prompt_set, sampling, slo, out)

    with Progress(targets, plan, enabled=not args.no_progress) as progress:
        results = asyncio.run(
            run_load(targets, prompt_set, sampling, plan, on_record=progress.record, on_level=progress.level)
        )
    built = report.build(targets, plan, results, slo, options_record(args))
    files = report.write(built, out)
    Progress.print_summary(built)
    print(f"reports: {', '.join(str(f) for f in files)}")
    return 0


def run_sweep(args: argparse.Namespace, targets, plan, prompt_set, sampling, slo, out: Path) -> int:
    from loadtests import report
    from loadtests.progress import Progress
    from loadtests.sweep import SweepSettings, sweep

    settings = SweepSettings(args.knee_gain, args.past_knee, args.scrape_interval, metrics_sources(args, targets))
    with Progress(targets, plan, enabled=not args.no_progress) as progress:
        result = asyncio.run(
            sweep(targets, prompt_set, sampling, plan, settings, on_record=progress.record, on_level=progress.level)
        )
    built = report.build(targets, plan, result.results, slo, options_record(args))
    report.add_sweep(built, plan, result, settings)
    files = report.write(built, out)
    Progress.print_summary(built)
    for line in report.knee_lines(built):
        print(line)
    print(f"reports: {', '.join(str(f) for f in files)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="wai loadtest", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
