"""Stream padding: its length is random and bounded, whatever the configured maximum."""

import json

from server.streaming import Padding


def test_padding_lengths_cover_the_range_and_stay_alphanumeric():
    for most in (1, 32, 200):
        padding = Padding(most)
        endings = [padding.ending() for _ in range(3000)]
        pads = [json.loads(b'{"response":""' + ending.removesuffix(b"\n\n"))["p"] for ending in endings]
        lengths = {len(p) for p in pads}
        assert min(lengths) >= 1 and max(lengths) <= most
        assert len(lengths) == most or most == 200 and len(lengths) > 150
        assert all(p.isalnum() and p.isascii() for p in pads)
        assert all(ending.endswith(b'"}\n\n') for ending in endings)


def test_lengths_are_spread_evenly():
    padding = Padding(8)
    counts = [0] * 8
    for _ in range(8000):
        counts[padding.length() - 1] += 1
    assert min(counts) > 800 and max(counts) < 1200  # each ~1,000; 6 standard deviations is ~170
