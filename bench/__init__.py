"""Benchmarks for the service, each measured against a baseline run in the same session.

Absolute numbers drift on a shared machine, so every script runs its baseline
and the service back to back (alternating where it can) and reports ratios.
See docs/BENCHMARKS.md for the commands, the results and the findings.
"""
