#!/usr/bin/env python3
"""`make gpu-check`: one verdict on whether this GPU node serves Llama 3 8B Instruct with wai.

Steps, in order (docs/deploy.md, "GPU check"), each with its share of an 8-minute budget on one H100:
  gpu            nvidia-smi: each GPU's name, memory and the driver
  engine         vLLM installed, the GPU build, from 0.26.0 to the version pyproject.toml pins
  plan           `wai plan` for the config on the GPU found (or --gpu)
  bandwidth      GPU memory bandwidth measured with PyTorch, and the decode ceiling it implies (an estimate)
  weights        the checkpoint is reachable: a local folder, the Hugging Face cache, or HF_TOKEN; none is
                 needed for a config of random weights (configs/llama-3-8b-dummy.yaml: load_format dummy)
  model          `wai prepare`; the config the check serves; 4 random-weight LoRA adapters from a seed
  serve          `wai serve` starts and answers (random weights: every answer says x-wai-stand-in)
  fidelity       the Llama 3 checks that need no known answers, over HTTP (scripts/gpu_check_fidelity.py)
  loadtest       wai against `vllm serve` on the same engine arguments at 1, 8, 64 and 256 streams of
                 256 tokens: tokens/s, TTFT, ITL, front-end CPU per token; wai's tokens/s over vLLM's
  lora           the same at 64 streams spread over the 4 adapters
  api_processes  `wai serve --api-processes 2` at 256 streams

Every step ends pass, fail or skipped, with the reason; a step whose prerequisite failed is skipped and
says which. The report is written whatever happens: <out>/gpu-check.md and <out>/gpu-check.json.
The verdict is pass only when every step passed, fail when any failed (a node without a GPU fails).

--dry-run runs the preflight (gpu, engine, plan, bandwidth, weights, with no network) and lists what the
other steps would run, then exits 0 once the report is written.

--rehearse runs the whole sequence on this machine's CPU instead: the same steps and report, with
Llama 3's tokenizer on a tiny random-weight architecture, the CPU build of vLLM and a few streams of a
few tokens. The GPU steps are skipped, so its verdict is never pass; it exits 0 when every other step
passed.

Only the standard library is needed up to the model step, so the preflight reports on a bare node;
PyTorch is used when present, wai's own dependencies from the plan step on.
"""

# The steps are in gpu_check_steps.py, the report in gpu_check_report.py: run as a file, this script
# finds them beside it (Python puts a script's folder first on sys.path).

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gpu_check_report import PASS, markdown
from gpu_check_steps import DEFAULT_CONFIG, GPU_ONLY, ROOT, GpuCheck

# wai's own modules (server, loadtests, benchmarks) from this checkout or install, as its subprocesses see them.
sys.path.insert(1, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/gpu_check.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--out", type=Path, default=ROOT / "test-artifacts" / "gpu-check")
    parser.add_argument("--dry-run", action="store_true", help="preflight only; list what the rest would run")
    parser.add_argument("--rehearse", action="store_true", help="the whole sequence on this CPU, tiny and short")
    parser.add_argument("--gpu", help="plan for this GPU (name or memory size) instead of the one detected")
    parser.add_argument("--nvidia-smi", default="nvidia-smi", help="the nvidia-smi to ask (default: on PATH)")
    parser.add_argument("--ready-timeout", type=float, default=600, help="seconds for a server to be ready")
    args = parser.parse_args(argv)

    check = GpuCheck(args)
    report = check.run_all()
    (args.out / "gpu-check.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "gpu-check.md").write_text(markdown(report))
    for s in report["steps"]:
        print(f"{s['verdict']:8s} {s['name']:10s} {s['reason']}")
        if args.dry_run and s["command"]:
            print(f"{'':19s}$ {s['command']}")
    print(f"\nverdict: {report['verdict']}: {report['summary']}")
    print(f"report: {args.out / 'gpu-check.md'} and gpu-check.json")
    if args.dry_run:
        return 0
    if args.rehearse:
        return 0 if all(s["verdict"] == PASS for s in report["steps"] if s["name"] not in GPU_ONLY) else 1
    return 0 if report["verdict"] == PASS else 1


if __name__ == "__main__":
    sys.exit(main())
