"""Benchmarks of wai against `vllm serve`: they drive both servers with the load generator (loadtests/)."""
