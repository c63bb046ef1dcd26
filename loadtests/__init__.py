"""`wai loadtest`: a load generator for the Workers AI run endpoint and the OpenAI chat endpoint.

Modules: cli (options), prompts, protocols (one class per wire format), client (one timed
streamed request), runner (closed and open loop), stats, report (report.json), markdown_report
(report.md), plots (PNG), html_report (report.html), display (the reports' number formats),
compare (ratios between targets), sweep (`--sweep`, with knee and engine_metrics), soak
(`--soak`), bench (`make bench`: wai against `vllm serve`).
"""
