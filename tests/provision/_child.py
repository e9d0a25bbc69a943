"""A separate process using a provisioner, driven by the tests through argv and stdin.

Usage: python _child.py COMMAND SERVER_URL REGISTRY CACHE_DIR ROOT MIGRATE
(``ISOLATED_BUILDS=1`` in the environment: migrations run in a process of their own)

COMMAND ``build`` builds (or reuses) the template and prints ``template NAME``.
COMMAND ``leak`` takes a template, two test clones and a worker clone, prints
``leaked NAME...`` and exits without cleaning up (as a killed run would).
COMMAND ``run`` is one test run: reap, template, three test clones each
marked with the run id, ``ready`` and wait for a line on stdin, reap again,
check its clones are intact (``intact N``), release them and close.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sqlsandbox.provision import Provisioner, TemplateSpec
from sqlsandbox.provision._dbapi import connect
from sqlsandbox.servers import connect_server


def say(line: str) -> None:
    print(line, flush=True)


def main() -> int:
    command, url, registry, cache_dir, root, migrate = sys.argv[1:7]
    server = connect_server(url)
    provisioner = Provisioner(
        server,
        registry_database=registry,
        cache_dir=Path(cache_dir),
        on_progress=lambda m: say(f"progress {m}"),
        warm={},
        isolated_builds=bool(os.environ.get("ISOLATED_BUILDS")),
    )
    spec = TemplateSpec(migrate=migrate, root=Path(root))
    if command == "build":
        say("ensuring")
        template = provisioner.template(spec)
        say(f"template {template.name} built={template.built}")
        provisioner.close(reap=False)
        return 0
    if command == "leak":
        provisioner.template(spec)
        names = [provisioner.acquire("test").name for _ in range(2)]
        names.append(provisioner.clone("worker").name)
        say("leaked " + " ".join(names))
        os._exit(0)
    provisioner.reap()
    provisioner.template(spec)
    leases = [provisioner.acquire("test") for _ in range(3)]
    for lease in leases:
        conn = connect(lease.url)
        cur = conn.cursor()
        cur.execute(f"INSERT INTO marks (run) VALUES ('{provisioner.run_id}')")
        conn.commit()
        conn.close()
    say("ready " + " ".join(lease.name for lease in leases))
    sys.stdin.readline()
    provisioner.reap()
    intact = 0
    for lease in leases:
        conn = connect(lease.url)
        cur = conn.cursor()
        cur.execute("SELECT run FROM marks")
        if [tuple(r) for r in cur.fetchall()] == [(provisioner.run_id,)]:
            intact += 1
        conn.close()
    say(f"intact {intact}")
    for lease in leases:
        lease.release()
    provisioner.close()
    say("closed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
