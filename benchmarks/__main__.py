"""Run benchmark groups and write benchmarks/results/latest.json."""

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
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "latest.json"
    out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"[bench] wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
