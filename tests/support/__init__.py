"""What every test tier shares, and no tier's own tests: the one place to start a server, find a port,
read an envelope, a stream or /metrics, and stand up a canned HTTP target.

repo         paths and model names of this repository the tests rely on
ports        a free loopback port
waiting      poll until a condition holds
servers      start a server and wait until it is ready: a real `wai serve`, the app in process on the
             fake engines, or any command with a readiness URL
fakes        the fake engines (the engine interface without vLLM) and settings that need no model files
http_target  a canned HTTP target: a request handler served on a free port in a thread
envelopes    Workers AI envelopes and OpenAI error objects: read one, or say what is wrong with one
sse          a server-sent event stream read exactly as bytes arrive
metrics      /metrics read with prometheus_client's parser
api_fuzz     schemathesis over the app's own OpenAPI document (fuzz tier, and the real server's short run)
fuzz_tally   what the fuzz tests sent, for `make fuzz`'s summary
"""
