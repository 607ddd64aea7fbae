"""``python -m hil_robot_ros NODE [hydra overrides] [--ros-args ...]`` runs one node."""

from __future__ import annotations

import importlib
import sys

from hil_robot_ros import NODES


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in NODES:
        print(f"usage: python -m hil_robot_ros NODE [key=value ...] [--ros-args ...]\nnodes: {', '.join(NODES)}",
              file=sys.stderr)
        return 2
    module, func = NODES[argv[0]].split(":")
    try:
        return int(getattr(importlib.import_module(module), func)(argv[1:]) or 0)
    except KeyboardInterrupt:  # Ctrl-C while still importing/starting: no traceback
        return 130


if __name__ == "__main__":
    sys.exit(main())
