"""The package installs like a package: a wheel, a fresh virtualenv, no repository.

Builds the wheel from this checkout, installs it (dependencies from pip's cache or
index) into a virtualenv in a temporary directory, and runs the installed
``chat-notifier`` with its working directory outside the repository, so nothing can be
read from the source tree: the Avro schemas, the demo scenario and the email templates
must all come from inside the installed package. ~30 s with a warm pip cache.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import venv
import zipfile
from pathlib import Path

import pytest

from bench.replay import copy_checkout, generate

pytestmark = [pytest.mark.wheel, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = sorted(p.name for p in (ROOT / "processors" / "schemas").iterdir())
TEMPLATES = sorted(
    p.relative_to(ROOT / "processors").as_posix()
    for p in (ROOT / "processors" / "templates").rglob("*")
    if p.suffix in (".j2", ".html", ".css", ".js")  # email, and the dashboard's pages
)

EMAIL_FROM_INSTALLED = """
import json, sys
from processors.senders import render
for line in open(sys.argv[1]):
    record = json.loads(line)
    if record["topic"] == "notify.email":
        email = render.build_email(record["value"], {}, "tok", 1764000000000)
        print(render.SHIPPED_TEMPLATES)
        print(email.subject)
        print("html" if "<html" in email.html.lower() else "no html")
        break
"""


def test_repository_schemas_dir_is_the_package_dir() -> None:
    """The design's layout names ``schemas/``: a link to the files the package ships."""
    link = ROOT / "schemas"
    assert link.is_symlink() and link.resolve() == (ROOT / "processors" / "schemas").resolve()
    assert "README.md" in SCHEMAS and "MessageEvent.avsc" in SCHEMAS


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout, built as ``pip install .`` builds it (isolated, so with
    mypyc compiling the core: setup.py)."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    source = copy_checkout(tmp_path / "source")
    dist = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(source)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    assert "installing the pure-Python package" not in built.stderr or not COMPILER, built.stderr
    (path,) = dist.glob("chat_notifier-*.whl")
    return path


@pytest.fixture(scope="module")
def unpacked(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel's files, as an install puts them in site-packages (no dependencies)."""
    site = tmp_path_factory.mktemp("site")
    zipfile.ZipFile(wheel).extractall(site)
    return site


# A machine with a C compiler builds the compiled wheel; one without, the pure one.
COMPILER = (
    shutil.which((os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0])
    is not None
)


def test_wheel_compiles_the_core(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    compiled = sorted(n for n in names if n.endswith(".so"))
    if not COMPILER:
        assert compiled == [] and wheel.name.endswith("-py3-none-any.whl")
        return
    core = sorted(p.stem for p in (ROOT / "processors" / "core").glob("*.py"))
    assert [n.split("/")[-1].split(".")[0] for n in compiled if "/core/" in n] == core
    assert "processors/core/engine.py" in names  # the source ships beside it


def test_compiled_core_passes_the_core_replay_and_pipeline_tests(unpacked: Path) -> None:
    """mypyc checks annotations at run time, and runs what it compiles differently: the
    core's, replay's and whatif's tests, and the live pipeline on the real broker (its
    workers are started with the same environment), on the installed package instead of
    the source tree."""
    env = {**os.environ, "PYTHONPATH": str(unpacked), "CHAT_NOTIFIER_EXPECT_COMPILED": "1"}
    if not COMPILER:
        env.pop("CHAT_NOTIFIER_EXPECT_COMPILED")
    tests = [
        "tests/core",
        *sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("tests/test_replay*.py")),
        "tests/test_whatif.py",
        "tests/live/test_pipeline.py",
        "tests/live/test_fastpath_contract.py",
    ]
    run = subprocess.run(
        [sys.executable, "-P", "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"]
        # -P and append: the installed package (PYTHONPATH) is imported, not the source
        # tree (the tests start their CLIs with -P too)
        + ["--import-mode=append", "-m", "not wheel and not browser", *tests],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout.splitlines()[-1]


def test_installed_replay_writes_what_the_source_tree_writes(
    unpacked: Path, tmp_path: Path
) -> None:
    """Mixed traffic (the bench's, smaller), Deliveries included: the same bytes."""
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"".join(generate(20_000)))
    outputs = []
    for label, pythonpath in (("installed", str(unpacked)), ("source", None)):
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        out = tmp_path / f"{label}.jsonl"
        cmd = [sys.executable, "-P", "-m", "processors.cli", "replay", "--input", str(src)]
        where = "import processors.core.engine as e; print(e.__file__)"
        probe = subprocess.run(
            [sys.executable, "-c", where], env=env, cwd="/", capture_output=True, text=True
        )
        assert probe.stdout.strip().startswith(pythonpath or str(ROOT)), probe
        run = subprocess.run(
            [*cmd, "--output", str(out), "--deliveries"],
            env=env,
            cwd="/",
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    assert outputs[0].count(b'"notify.decisions"') > 10_000


def test_wheel_installs_and_runs_outside_the_repository(wheel: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [f"processors/schemas/{n}" for n in SCHEMAS if f"processors/schemas/{n}" not in names]
    missing += [f"processors/{n}" for n in TEMPLATES if f"processors/{n}" not in names]
    assert not missing, f"not in the wheel: {missing}"
    assert "processors/demo/scenario.jsonl" in names

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    bin_dir = env_dir / "bin"
    pip = subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "-q", str(wheel)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert pip.returncode == 0, pip.stderr[-3000:]

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args), cwd=work, env=env, capture_output=True, text=True, timeout=120
        )

    where = run(
        str(bin_dir / "python"),
        "-c",
        "import pathlib, processors; print(pathlib.Path(processors.__file__).parent)",
    )
    package_dir = Path(where.stdout.strip())
    assert package_dir.is_relative_to(env_dir), where  # the installed copy, not the source
    scenario = package_dir / "demo" / "scenario.jsonl"

    out = work / "replay.jsonl"
    replay = run(
        str(bin_dir / "chat-notifier"),
        "replay",
        "--input",
        str(scenario),
        "--output",
        str(out),
        "--deliveries",
    )
    assert replay.returncode == 0, replay.stderr[-3000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    topics = {r["topic"] for r in records}
    assert {"notify.flushes", "notify.decisions", "notify.email"} <= topics
    assert any(r["value"].get("outcome") == "send" for r in records)
    assert "bad input lines" in replay.stdout + replay.stderr

    email = run(str(bin_dir / "python"), "-c", EMAIL_FROM_INSTALLED, str(out))
    assert email.returncode == 0, email.stderr[-3000:]
    templates_dir, subject, html = email.stdout.splitlines()
    assert Path(templates_dir).is_relative_to(env_dir)
    assert subject and html == "html"

    help_text = run(str(bin_dir / "chat-notifier"), "worker", "--help")
    assert help_text.returncode == 0, help_text.stderr[-3000:]
    assert "usage: chat-notifier worker" in help_text.stdout and "--web-port" in help_text.stdout
    assert time.monotonic() - started < 180, "wheel test too slow for CI"
