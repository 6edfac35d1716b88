"""Wheels compile the pure core with mypyc; everything else (and every failure) is Python.

The metadata is in pyproject.toml. This file adds one thing: when a wheel is built
(``pip install .``, ``pip wheel .``, ``python -m build``), the modules of
``processors/core`` and ``processors/topics.py`` are compiled to C extensions with
mypyc: replay takes about three quarters of the time it takes from the source tree
(``make bench`` measures both), and the live worker runs the same compiled core. The
``.py`` files ship beside them: the package is the same Python, compiled.

Nothing is compiled, and the wheel is plain Python, when

* the install is editable (``pip install -e .``, what ``make`` does): a compiled module
  beside its source would shadow every later edit of it;
* ``CHAT_NOTIFIER_PURE=1`` is set;
* there is no C compiler, or compiling fails for any reason: a warning says so and the
  build goes on without any extension (all or nothing: a module compiled without the
  shared library mypyc puts beside it would not import).
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
import sysconfig
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

COMPILED = sorted(glob.glob("processors/core/*.py")) + ["processors/topics.py"]


def _warn(message: str) -> None:
    print(f"chat-notifier: {message}; installing the pure-Python package", file=sys.stderr)


class OptionalBuildExt(build_ext):
    """build_ext that leaves no extension behind when any of them fails to build."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any failure: the pure package still works
            for path in self.get_outputs():
                if os.path.exists(path):
                    os.remove(path)
            self.extensions = []
            _warn(f"compiling the core failed ({type(exc).__name__}: {exc})")


def _extensions() -> list[Any]:
    if "bdist_wheel" not in sys.argv:  # editable installs, sdists, metadata
        return []
    if os.environ.get("CHAT_NOTIFIER_PURE", "") not in ("", "0"):
        return []
    compiler = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        _warn(f"no C compiler ({compiler}) to compile the core with mypyc")
        return []
    try:
        from mypyc.build import mypycify

        return list(mypycify(COMPILED, opt_level="3", group_name="processors"))
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - e.g. mypyc missing or a type error
        _warn(f"mypyc cannot compile the core ({type(exc).__name__}: {exc})")
        return []


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
