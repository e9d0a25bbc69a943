"""sqlsandbox benchmarks: ``make bench`` (or ``python -m benchmarks [--only GROUP]``).

Each group lives in ``benchmarks/group_<name>.py`` and exposes
``run(machine: dict) -> dict`` returning the keys of ../shared/BENCHMARKS.md
it measured. Medians over repeated runs after a warm-up; nothing is estimated.
"""
