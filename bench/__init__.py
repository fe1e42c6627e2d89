"""Benchmarks (run with ``make bench``) and the local fakes they share with the tests."""
