"""ProntoDB benchmarks: each measures, prints its figures and rewrites its section of docs/BENCHMARKS.md."""
