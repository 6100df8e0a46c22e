"""GPU benchmarks, run as `python -m benchmarks.<name>` (each takes --smoke for a CPU check in seconds)."""
