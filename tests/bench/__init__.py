"""forkd side by side with its peers: the benchmark harness (never collected by pytest).

Run `python3 -m tests.bench` (full, under 10 minutes on 2 cores) or `python3 -m tests.bench --quick`
from the repository root. See run.py for the theory of operation.
"""
