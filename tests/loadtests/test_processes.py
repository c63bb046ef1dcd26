"""Load from several processes (`--processes`), light reading (`--light`): the same requests, the
same records, as one process decoding every event."""

import asyncio

import pytest

from loadtests.cli import main
from loadtests.prompts import synthetic_prompts
from loadtests.protocols import Sampling, Target
from loadtests.runner import LoadPlan, run_load, split_streams
from tests.support.fakes import TEXT_MODEL, fake_settings
from tests.support.servers import serve_app


def test_streams_and_prompts_are_shared_out_among_the_processes():
    prompts = synthetic_prompts(10, 4, 4)
    jobs = split_streams(5, prompts, 2, whole=False)
    assert [streams for streams, _ in jobs] == [3, 2]
    assert [p.id for _, part in jobs for p in part] == [p.id for p in prompts]
    assert [len(part) for _, part in jobs] == [6, 4]
    assert [streams for streams, _ in split_streams(2, prompts, 4, whole=False)] == [1, 1]  # none idle
    assert all(part == prompts for _, part in split_streams(4, prompts, 2, whole=True))


def test_several_processes_are_for_the_closed_loop_without_cancellations():
    with pytest.raises(ValueError):
        LoadPlan(mode="open", levels=[1.0], num_requests=4, processes=2)
    with pytest.raises(ValueError):
        LoadPlan(mode="closed", levels=[1.0], num_requests=4, processes=2, cancel_rate=0.5)
    assert main(["--url", "http://127.0.0.1:9", "--rate", "1", "--processes", "2"]) == 2


def test_two_light_processes_record_what_one_full_process_records(tmp_path):
    prompts = synthetic_prompts(12, 4, 8)
    with serve_app(fake_settings(tmp_path)) as served:
        targets = [
            Target("run", served.base_url, "workers-ai", TEXT_MODEL),
            Target("chat", served.base_url, "openai", TEXT_MODEL),
        ]

        def load(**options):
            plan = LoadPlan(mode="closed", levels=[4.0], num_requests=12, warmup=1, **options)
            (result,) = asyncio.run(run_load(targets, prompts, Sampling(), plan))
            return result

        one, two = load(), load(processes=2, light=True)
    assert one.rounds == two.rounds == 2
    for target in targets:
        ones, twos = one.records[target.label], two.records[target.label]
        assert len(ones) == len(twos) == 12 and all(r.ok and r.level == 4.0 for r in ones + twos)
        assert sorted((r.prompt_id, r.output_tokens, len(r.itl)) for r in ones) == sorted(
            (r.prompt_id, r.output_tokens, len(r.itl)) for r in twos
        )
