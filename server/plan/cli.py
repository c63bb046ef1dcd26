"""`wai plan`: what a config needs of a GPU, before buying or deploying one.

The command's options and its run, from options to the printed plan and an exit status."""

from __future__ import annotations

import argparse
import json
import sys

from server.config import load_settings
from server.plan.data import GPUS, PlanError, find_gpu
from server.plan.render import render
from server.plan.sizing import make_plan


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config, e.g. configs/llama-3-8b-instruct.yaml")
    parser.add_argument("--gpu", required=True, help=f"{', '.join(GPUS)}, or a memory size such as 80GB")
    parser.add_argument("--gpus", type=int, help="GPUs one engine spans (default: the config's tensor_parallel_size)")
    parser.add_argument("--prompt-tokens", type=int, default=1000)
    parser.add_argument("--output-tokens", type=int, default=250)
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
        gpu = find_gpu(args.gpu)
        plan = {"config": args.config, **make_plan(settings, gpu, args.prompt_tokens, args.output_tokens, args.gpus)}
    except (OSError, ValueError, PlanError) as exc:
        print(f"wai plan: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(plan, indent=2) if args.json else render(plan))
    return 0 if all(m["fits"] for m in plan["models"]) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wai plan", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
