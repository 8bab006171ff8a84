"""`kubediffusers-bench`: the runner's benchmarks, one CLI with subcommands.

- ``pipeline``: livepeer ai-runner's bench.py figures (load time, inference
  time, time per output, peak GPU memory) of a direct pipeline call;
- ``serving``: the HTTP path (a real `kubediffusers-runner` process) against a
  direct call of the same request, interleaved, and their ratio;
- ``batching``: throughput over HTTP with dynamic batching off and on;
- ``arch``: stock diffusers vs this runner (in process and over HTTP) on a
  real-size architecture with random weights, plus cold start and batching;
- ``output``: the serving path's own cost on a stub pipeline (no model
  compute): encoders, HTTP minus direct per image for png/jpeg/webp, and
  served throughput as a share of the pipeline's own.

``harness`` holds what they share (timing, device sync, peak memory, device
name, runner processes, metrics); the tools take their parameters as
arguments, never from a shared namespace or the process environment.
"""
