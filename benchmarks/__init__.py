"""Latency, throughput and quality benchmarks; each writes JSON and a plot."""
