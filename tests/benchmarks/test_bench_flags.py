"""`make bench` runs vLLM's own server with exactly wai's engine arguments, and sums up its profile."""

from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.utils.argparse_utils import FlexibleArgumentParser

from server.config import load_settings
from server.engine.engine_args import engine_arg_values, serve_flags
from tests.support.repo import DEFAULT_CONFIG


def test_vllm_serve_flags_parse_back_to_the_engine_arguments_wai_uses():
    model = load_settings(DEFAULT_CONFIG).models[0]
    model.engine.enable_prefix_caching = False  # a False flag must come through as --no-...
    flags = serve_flags(model, "/models/checkpoint")
    assert "--no-enable-prefix-caching" in flags
    parsed = AsyncEngineArgs.from_cli_args(make_arg_parser(FlexibleArgumentParser()).parse_args(flags))
    for name, value in engine_arg_values(model, "/models/checkpoint").items():
        assert getattr(parsed, name) == value, name


def test_the_profile_summary_counts_the_leaf_of_every_sampled_stack(tmp_path):
    from benchmarks.bench import top_frames

    collapsed = tmp_path / "profile.txt"
    collapsed.write_text("main;loop;send 6\nmain;loop;select 3\nmain;handler;send 1\n\n")
    assert top_frames(collapsed) == [("send", 7, 0.7), ("select", 3, 0.3)]
    assert top_frames(collapsed, limit=1) == [("send", 7, 0.7)]
