#!/usr/bin/env python3
"""A balancer whose whole state is a JSON file, for the ``command`` driver's tests:
``state_lb.py STATE_FILE drain|ready|maint|status BACKEND SERVER``.

The file maps ``backend/server`` to ``{"state": ..., "sessions": N}``; tests change
``sessions`` to stand for sessions in flight. Updates are under an exclusive lock.
"""

from __future__ import annotations

import fcntl
import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[1] not in ("drain", "ready", "maint", "status"):
        print(
            "usage: state_lb.py STATE_FILE drain|ready|maint|status BACKEND SERVER", file=sys.stderr
        )
        return 2
    path, action, key = Path(argv[0]), argv[1], f"{argv[2]}/{argv[3]}"
    with path.open("r+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        servers = json.load(fh)
        if key not in servers:
            print(f"no such server: {key}", file=sys.stderr)
            return 1
        if action == "status":
            print(json.dumps(servers[key]))
            return 0
        servers[key]["state"] = action
        fh.seek(0)
        fh.truncate()
        json.dump(servers, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
