"""chanscale benchmarks: ``python -m bench.<name> [--quick]``; results and method in bench/RESULTS.md."""
