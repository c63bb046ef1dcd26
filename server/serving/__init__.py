"""The serving layer: typed requests made into engine work, the same for every protocol.

Prompts and chat templates, sampling, limits and admission, tool prompts and decoding schemas, the
fine-tune store, and the services that run text generation and embeddings on the engine.
"""
