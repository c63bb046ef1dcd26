"""wai: a server that answers the Cloudflare Workers AI API and the OpenAI API on a vLLM engine.

Its layers point one way, api -> protocol -> serving -> engine (tests/unit/test_layers.py), each a
package here with a docstring of its own; batch/ runs queued requests on the serving layer. The modules
at this level are the process around the layers: the `wai` command and app, configuration, keys, the
error table, metrics and request records, the server's lifecycle, and `wai prepare` and `wai plan`.
"""
