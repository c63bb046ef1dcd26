"""The engine layer: the engine interface as plain data, and the only code that imports vLLM."""
