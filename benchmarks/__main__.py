"""Run benchmark groups and write benchmarks/results/latest.json.

A run of every group replaces the file. A run of some groups (``--only``)
updates their keys and keeps the others' from the earlier run, so one group
can be measured again without losing the rest; ``measured_at`` says when each
group last ran (UTC).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

GROUPS = ("server", "sandbox", "provision", "suite")
RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    """Describe the machine the numbers come from."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    model = Path("/proc/cpuinfo")
    if model.exists():
        for line in model.read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--only", choices=GROUPS, action="append", help="run only this group")
    args = parser.parse_args(argv)
    groups = args.only or list(GROUPS)
    results: dict[str, Any] = {"machine": machine()}
    measured_at: dict[str, str] = {}
    for name in groups:
        try:
            module = importlib.import_module(f"benchmarks.group_{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"benchmarks.group_{name}":
                raise
            print(f"[bench] group {name!r} is not implemented yet; skipped", file=sys.stderr)
            continue
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        measured = module.run(results["machine"])
        print(
            f"[bench] {name} done in {time.perf_counter() - started:.1f}s: "
            + json.dumps(measured, sort_keys=True),
            file=sys.stderr,
        )
        results.update(measured)
        measured_at[name] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "latest.json"
    if args.only:
        results = _merged(out, results)
    results["measured_at"] = {**results.get("measured_at", {}), **measured_at}
    out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"[bench] wrote {out}", file=sys.stderr)
    return 0


def _merged(out: Path, results: dict[str, Any]) -> dict[str, Any]:
    """Return the earlier results in *out* updated with *results* (keys of the groups run)."""
    try:
        earlier = json.loads(out.read_text())
    except (OSError, ValueError):
        return results
    if not isinstance(earlier, dict):
        return results
    machine = {**earlier.get("machine", {}), **results["machine"]}
    return {**earlier, **results, "machine": machine}


if __name__ == "__main__":
    sys.exit(main())
