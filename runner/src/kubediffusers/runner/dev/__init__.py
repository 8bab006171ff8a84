"""Development tooling, apart from the server: tiny random-weight models for
tests and `make run` (``tiny``), real-size architectures with random weights
(``archs``) and the benchmarks (``bench``). The server never imports this."""
