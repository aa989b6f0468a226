#!/usr/bin/env python3
"""Quick start for a fresh clone; needs nothing but Python 3.10+.

    python3 run.py demo          # the field scenario on embedded SQLite
    python3 run.py test [ARGS]   # the whole test suite (ARGS go to pytest)
    python3 run.py lint          # ruff, import-linter and makemigrations --check

Each creates (once) a virtualenv in .venv-pyXY beside this file and installs the
project with its test extras into it. Django 6.x needs Python 3.12+; older Pythons
get Django 5.2 LTS.
"""
import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / f".venv-py{sys.version_info[0]}{sys.version_info[1]}"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")


def ensure_venv() -> Path:
    python = BIN / "python"
    stamp = VENV / ".installed"
    # Reinstall when the package description changes.
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "setup.py"):
        digest.update((ROOT / name).read_bytes())
    wanted = digest.hexdigest()
    if not python.exists():
        print(f"Creating {VENV.name} ...", flush=True)
        venv.create(VENV, with_pip=True)
    if not stamp.exists() or stamp.read_text() != wanted:
        print("Installing syncrouter and its test dependencies ...", flush=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", f"{ROOT}[test,lint]"],
                       check=True)
        stamp.write_text(wanted)
    return python


def lint(python: Path) -> int:
    """The checks .ci/run makes before the tests; the first that fails stops them."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT)}
    commands = [
        [str(BIN / "ruff"), "check", "."],
        [str(BIN / "lint-imports")],
        # The test settings name databases that need not exist for this: no history check.
        [str(python), "-W", "ignore::RuntimeWarning", "-m", "django", "makemigrations",
         "--check", "--dry-run", "syncrouter", "testapp", "convapp", "edgeapp"],
    ]
    for command in commands:
        code = subprocess.call(command, cwd=ROOT, env=env)
        if code:
            return code
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "lint"):
        print(__doc__)
        return 2
    python = ensure_venv()
    if argv[0] == "lint":
        return lint(python)
    if argv[0] == "demo":
        command = [str(python), str(ROOT / "demo" / "field_scenario.py"), *argv[1:]]
    else:
        command = [str(python), "-m", "pytest", *argv[1:]]
    return subprocess.call(command, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
