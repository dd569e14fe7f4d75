"""`build.py doctor`: the preflight checks and their runner (checks.py), and the time estimate (timing.py)."""
