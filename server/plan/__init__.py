"""`wai plan`: what a config needs of a GPU, before buying or deploying one.

For each text model of a config on a given GPU: the weights' memory, the KV cache's bytes per
token, the memory left for the KV cache under `gpu_memory_utilization`, the tokens that fit, the
concurrency that cache holds at a prompt + output length, and the decode ceiling that memory
bandwidth allows (an estimate, shown beside published measurements where there are some).

Light on purpose: it needs only the config's own modules (pydantic, PyYAML), never vLLM or torch,
so that it runs on a bare GPU node before anything is installed: `python -m server.plan ...`.
"""

# Modules: data (the GPU, model and published-figure tables), sizing (the maths), render (the text),
# cli (`wai plan`'s options and run; `python -m server.plan` runs it too). The package's docstring is
# the command's description in `wai plan --help`.

from server.plan.cli import add_arguments, main, run
from server.plan.data import GPUS, KNOWN_MODELS, Architecture, Gpu, PlanError, find_gpu
from server.plan.render import render
from server.plan.sizing import architecture_of, decode_estimate, make_plan, plan_model

__all__ = [
    "GPUS",
    "KNOWN_MODELS",
    "Architecture",
    "Gpu",
    "PlanError",
    "add_arguments",
    "architecture_of",
    "decode_estimate",
    "find_gpu",
    "main",
    "make_plan",
    "plan_model",
    "render",
    "run",
]
