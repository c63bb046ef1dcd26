"""Settings for every test server this suite starts."""

import os

# Test servers share the machine's cores with each other and with the test process. On a small
# machine wai binds the model's OpenMP threads to every core (server/engine/cpu_env.py), which
# stalls when other processes hold those cores (docs/benchmarks.md, "The embedded default on a
# CPU"); vLLM's own binding, one core for the model, degrades gracefully there. The binding wai
# computes is tested in tests/unit/test_cpu_env.py.
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "auto")
