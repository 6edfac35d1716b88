"""Run every benchmark, or the ones named: ``python -m bench core live senders``."""

from __future__ import annotations

import importlib
import sys

SUITES = ("core", "codec", "replay", "live", "senders", "scale")


def main() -> int:
    wanted = sys.argv[1:] or list(SUITES)
    for name in wanted:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"bench.{name}":
                raise
            print(f"== {name}: not present, skipped")
            continue
        print(f"== {name}")
        module.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
