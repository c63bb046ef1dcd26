"""`make bench-frontend`: the tiny model, the front-end CPU accounting, the report's arithmetic, the
load generator's light reading of streams, and one short run on the real engines."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from benchmarks.frontend import (
    BASE,
    Cost,
    cpu_spent,
    front_end_cpu,
    is_engine,
    loadgen_saturated,
    series_row,
    with_ratios,
)
from benchmarks.tiny_model import build, tokenizer_dir
from loadtests.client import send
from loadtests.prompts import Prompt
from loadtests.protocols import Sampling, Target
from tests.support.early import EarlyCommand
from tests.support.fakes import TEXT_MODEL, fake_settings
from tests.support.servers import serve_app

PROMPT = Prompt("p", [{"role": "user", "content": "Say something."}], 24)


def test_the_tiny_model_is_a_one_layer_llama_built_the_same_every_time(tmp_path):
    from safetensors.numpy import load_file

    first, second = build(tmp_path / "a"), build(tmp_path / "b")
    config = json.loads((first / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["num_hidden_layers"], config["hidden_size"], config["torch_dtype"]) == (1, 64, "float32")
    assert config["vocab_size"] == json.loads((tokenizer_dir() / "config.json").read_text())["vocab_size"]
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()
    assert (first / "tokenizer.json").read_bytes() == (tokenizer_dir() / "tokenizer.json").read_bytes()
    tensors = load_file(str(first / "model.safetensors"))
    assert all(t.dtype.name == "float32" for t in tensors.values())
    head = tensors["lm_head.weight"]
    assert not head[config["eos_token_id"]].any() and head[100].any()  # end of sequence can never win

    written = (first / "model.safetensors").stat().st_mtime_ns
    assert build(tmp_path / "a") == first and (first / "model.safetensors").stat().st_mtime_ns == written
    (first / "config.json").write_text(json.dumps({**config, "hidden_size": 128}))
    build(tmp_path / "a")  # a build of another shape is replaced
    assert json.loads((first / "config.json").read_text()) == config


def test_engine_processes_are_told_by_their_title():
    assert is_engine("VLLM::EngineCor", ["VLLM::EngineCore"])
    assert is_engine("VLLM::EngineCor", [])  # the kernel's 15 characters alone
    assert is_engine("VLLM::Worker_TP", ["VLLM::Worker_TP0"])
    assert not is_engine("VLLM::APIServer", ["VLLM::APIServer_0"])  # more API processes are front end
    assert not is_engine("python", ["/usr/bin/python", "-m", "server.cli", "serve"])


BUSY_TREE = """
import subprocess, sys, time
child = (
    "import setproctitle, time\\n"
    "setproctitle.setproctitle('VLLM::EngineCore')\\n"
    "end = time.process_time() + 1.0\\n"
    "while time.process_time() < end: pass\\n"
    "print('busy', flush=True)\\n"
    "time.sleep(60)\\n"
)
engine = subprocess.Popen([sys.executable, "-c", child], stdout=sys.stdout)
time.sleep(60)
"""


def test_front_end_cpu_leaves_the_engine_processes_out():
    server = subprocess.Popen([sys.executable, "-c", BUSY_TREE], stdout=subprocess.PIPE, text=True)
    try:
        before = front_end_cpu(server.pid)
        assert server.stdout is not None and server.stdout.readline().strip() == "busy"  # the engine spent 1 s
        after = front_end_cpu(server.pid)
        assert [pid for pid, _ in after] == [server.pid]
        assert 0 <= cpu_spent(before, after) < 0.5
    finally:
        for child in __import__("psutil").Process(server.pid).children(recursive=True):
            child.kill()
        server.kill()
        server.wait()


def test_cpu_spent_counts_a_new_process_from_zero_and_ignores_one_that_left():
    before = {(1, 0.0): 2.0, (2, 0.0): 5.0}
    after = {(1, 0.0): 2.5, (3, 9.0): 0.25}
    assert cpu_spent(before, after) == pytest.approx(0.75)


def summary(tokens: int, throughput: float) -> dict:
    latencies = {"p50": 1.0, "p99": 2.0}
    return {
        "requests": 4,
        "failed": 0,
        "output_tokens": tokens,
        "mean_output_tokens": tokens / 4,
        "output_throughput": throughput,
        "ttft_ms": latencies,
        "itl_ms": latencies,
    }


def test_the_report_divides_cpu_by_streamed_tokens_and_compares_with_vllm_serve():
    rows = {
        BASE: series_row(summary(1000, 200.0), Cost(0.5, 0.25, 2.0, 1000), 1),
        "wai-run": series_row(summary(1000, 300.0), Cost(0.25, 0.5, 1.0, 1000), 1),
        "wai-openai": series_row(summary(0, 0.0), Cost(0.1, 0.0, 0.0, 0), 1),
    }
    rows = with_ratios(rows)
    assert rows[BASE]["front_end_cpu_us_per_token"] == pytest.approx(500)
    assert rows[BASE]["loadgen_cpu_pct"] == pytest.approx(12.5)
    assert rows["wai-run"]["front_end_cpu_us_per_token"] == pytest.approx(250)
    assert rows["wai-run"]["loadgen_cpu_pct"] == pytest.approx(50)
    assert rows["wai-run"]["ratios"] == pytest.approx({"output_throughput": 1.5, "front_end_cpu_us_per_token": 0.5})
    assert rows["wai-openai"]["front_end_cpu_us_per_token"] is None
    assert rows["wai-openai"]["ratios"]["front_end_cpu_us_per_token"] is None
    assert "ratios" not in rows[BASE]
    assert not loadgen_saturated(rows["wai-run"])
    assert loadgen_saturated(series_row(summary(10, 1.0), Cost(0, 1.9, 2.0, 10), 1))
    assert not loadgen_saturated(series_row(summary(10, 1.0), Cost(0, 1.9, 2.0, 10), 2))  # 2 processes, 95 %


# vLLM's OpenAI server's stream: the role chunk, text chunks (one empty), the finishing chunk, usage.
def vllm_stream(tokens: int) -> bytes:
    head = '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",'
    chunks = [head + '"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}']
    for i in range(tokens):
        text = "" if i == 3 else f' w{i} \\"error\\": x'  # an escaped quote is no error key
        chunks.append(head + f'"choices":[{{"index":0,"delta":{{"content":"{text}"}},"finish_reason":null}}]}}')
    chunks.append(head + '"choices":[{"index":0,"delta":{"content":""},"finish_reason":"length"}]}')
    chunks.append(head + f'"choices":[],"usage":{{"prompt_tokens":5,"completion_tokens":{tokens}}}}}')
    return b"".join(f"data: {c}\n\n".encode() for c in [*chunks, "[DONE]"])


class Chunks(httpx.AsyncByteStream):
    """Recorded bytes, delivered in pieces that cut lines (and characters) anywhere."""

    def __init__(self, body: bytes, size: int):
        self.body, self.size = body, size

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self.body), self.size):
            yield self.body[i : i + self.size]


def replay(body: bytes, protocol: str, light: bool, size: int = 7):
    def reply(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Chunks(body, size), headers={"content-type": "text/event-stream"})

    async def one():
        async with httpx.AsyncClient(transport=httpx.MockTransport(reply)) as client:
            target = Target("t", "http://server", protocol, "m")
            return await send(client, target, PROMPT, Sampling(), 1, time.perf_counter(), light=light)

    return asyncio.run(one())


def recorded_wai_streams(tmp_path) -> dict[str, bytes]:
    """wai's own streams (the real app on the fake engine, padding on) for both protocols."""
    with serve_app(fake_settings(tmp_path)) as served:
        message = {"messages": PROMPT.messages, "max_tokens": 24, "stream": True}
        run = httpx.post(f"{served.base_url}/client/v4/accounts/a/ai/run/{TEXT_MODEL}", json=message)
        chat = httpx.post(
            f"{served.base_url}/v1/chat/completions",
            json={**message, "model": TEXT_MODEL, "stream_options": {"include_usage": True}},
        )
    assert run.status_code == chat.status_code == 200
    return {"workers-ai": run.content, "openai": chat.content}


def test_light_reading_counts_what_full_decoding_counts_on_recorded_streams(tmp_path):
    streams = [(p, body) for p, body in recorded_wai_streams(tmp_path).items()] + [("openai", vllm_stream(12))]
    assert b'"p":"' in streams[0][1]  # padding on
    for protocol, body in streams:
        full = replay(body, protocol, light=False)
        for size in (1, 7, 4096):
            light = replay(body, protocol, light=True, size=size)
            assert light.ok and full.ok, (light.error, full.error)
            assert light.output_tokens == full.output_tokens and light.prompt_tokens == full.prompt_tokens
            assert len(light.itl) == len(full.itl) > 2, protocol
            assert light.usage_missing is full.usage_missing is False


def test_light_reading_still_sees_an_error_event_mid_stream():
    error = b'data: {"response":"","success":false,"errors":[{"code":3007,"message":"timed out"}]}\n\n'
    body = b'data: {"response":"a","p":"x"}\n\n' * 5 + error + b"data: [DONE]\n\n"
    for light in (False, True):
        record = replay(body, "workers-ai", light=light)
        assert not record.ok and record.error_code == "stream:3007", light


SHORT_RUN = ["--levels", "4", "--requests", "8", "--output-tokens", "8", "--warmup", "2", "--processes", "2"]
SMALL_ENGINE = ["--kv-cache-gib", "0.0625", "--max-num-seqs", "16"]
# Three servers on the real engine take minutes on a CPU: the run starts when collection ends
# (tests/support/early.py).
SHORT_RUN_ON_THE_REAL_ENGINES = EarlyCommand(
    "bench-frontend",
    lambda out: [sys.executable, "-m", "benchmarks.frontend", *SHORT_RUN, "--out", str(out), *SMALL_ENGINE],
    timeout=900,
)


@pytest.mark.early(SHORT_RUN_ON_THE_REAL_ENGINES)
def test_a_short_run_on_the_real_engines_reports_every_series():
    done = SHORT_RUN_ON_THE_REAL_ENGINES.result()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.folder
    report = json.loads((out / "frontend.json").read_text())
    assert "VLLM::EngineCore" in json.dumps(report["processes"]["wai"]["engine"])
    assert report["processes"]["wai"]["front_end"] and report["processes"]["vllm serve"]["front_end"]
    (level,) = report["levels"]
    assert set(level["series"]) == {"vllm-serve", "wai-openai", "wai-run", "floor"}
    assert report["processes"]["floor"]["front_end"] and "VLLM::EngineCore" in json.dumps(report["processes"]["floor"])
    for name, row in level["series"].items():
        assert row["requests"] == 8 and row["failed"] == 0, name
        assert row["mean_output_tokens"] == 8, name  # the tiny model never ends early
        assert row["engine_tokens"] == row["output_tokens"] == 64, name
        assert row["output_throughput"] > 0 and row["front_end_cpu_us_per_token"] > 0, name
        assert row["ttft_ms"]["p50"] > 0 and row["itl_ms"]["p99"] > 0 and row["loadgen_cpu_pct"] > 0, name
    assert level["series"]["wai-run"]["ratios"]["output_throughput"] > 0
    assert "| wai-run | 8 (0) |" in (out / "frontend.md").read_text()
    assert "| floor | 8 (0) |" in (out / "frontend.md").read_text()
