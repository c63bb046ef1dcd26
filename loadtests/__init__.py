"""`wai loadtest`: a load generator for the Workers AI run endpoint and the OpenAI chat endpoint.

Modules: cli (options), prompts, protocols (one class per wire format), client (one timed
streamed request), runner (closed and open loop), stats, report (JSON, Markdown, plots),
compare (ratios between targets), bench (`make bench`: wai against `vllm serve`).
"""
