"""Stream padding: its length is random and bounded, whatever the configured maximum."""

from server.config import StreamingConfig
from server.streaming import padding


def test_padding_lengths_cover_the_range_and_stay_alphanumeric():
    for most in (1, 32, 200):
        pads = [padding(StreamingConfig(padding_max_chars=most)) for _ in range(3000)]
        lengths = {len(p) for p in pads}
        assert min(lengths) >= 1 and max(lengths) <= most
        assert len(lengths) == most or most == 200 and len(lengths) > 150
        assert all(p.isalnum() and p.isascii() for p in pads)
