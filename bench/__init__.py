"""Benchmarks for issue 9 ("prove it"): throughput, peers, latency, replay, resources, fuzzing, faults.

``python -m bench`` runs them all and writes raw results to ``bench/out/``;
BENCHMARKS.md at the repository root reports them. Each module has a
``run(quick: bool) -> dict`` entry point and can be run alone with
``python -m bench.<module>``.
"""
