"""The CPU install removes the CUDA torchvision that breaks transformers beside the CPU torch."""


def test_transformers_and_the_engine_import():
    import transformers
    import vllm
    from transformers import AutoTokenizer  # noqa: F401  (triggers the torchvision check when present)

    assert transformers.__version__ and vllm.__version__
