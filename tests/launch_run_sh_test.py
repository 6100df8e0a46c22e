"""launch/run.sh rebuilds a broken .venv (dangling interpreter, another Python) instead of failing on every rerun.
The real Python is replaced by a fake `python3.12` on PATH so the test needs no network and takes a second."""

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FAKE_PYTHON = """#!/usr/bin/env bash
# A stand-in for Python {version}: answers run.sh's version check, makes venvs, and fakes pip and pytest.
if [ "$1" = "-c" ]; then [ "{version}" = "3.12" ]; exit; fi
if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin"; cp "$0" "$3/bin/python"; exit 0; fi
if [ "$1 $2" = "-m pip" ]; then exit 0; fi
if [ "$1 $2" = "-m pytest" ]; then echo "fake pytest ran with {version}"; exit 0; fi
exit 3
"""


def _write_python(path, version):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(FAKE_PYTHON.format(version=version))
    os.chmod(path, 0o755)


@pytest.fixture
def repo(tmp_path):
    os.makedirs(tmp_path / "launch")
    shutil.copy(os.path.join(ROOT, "launch", "run.sh"), tmp_path / "launch" / "run.sh")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'fake'\n")
    _write_python(str(tmp_path / "bin" / "python3.12"), "3.12")
    return tmp_path


def _run_sh(repo):
    stamp = subprocess.run(["sha256sum", "pyproject.toml"], cwd=repo, capture_output=True, text=True).stdout[:16]
    env = dict(os.environ, PATH=f"{repo / 'bin'}:/usr/bin:/bin", HOME=str(repo))
    return stamp, lambda: subprocess.run(["bash", "launch/run.sh", "test"], cwd=repo, env=env,
                                         capture_output=True, text=True, timeout=60)


def test_dangling_venv_interpreter_is_rebuilt(repo):
    stamp, run = _run_sh(repo)
    os.makedirs(repo / ".venv" / "bin")
    os.symlink("/nonexistent/python3.12", repo / ".venv" / "bin" / "python")
    (repo / ".venv" / f".installed-{stamp}").touch()
    done = run()
    assert done.returncode == 0, done.stderr
    assert "is broken" in done.stderr and "fake pytest ran with 3.12" in done.stdout


def test_venv_of_another_python_is_rebuilt(repo):
    stamp, run = _run_sh(repo)
    _write_python(str(repo / ".venv" / "bin" / "python"), "3.11")
    (repo / ".venv" / f".installed-{stamp}").touch()
    done = run()
    assert done.returncode == 0, done.stderr
    assert "is broken" in done.stderr and "fake pytest ran with 3.12" in done.stdout


def test_healthy_venv_is_reused(repo):
    stamp, run = _run_sh(repo)
    _write_python(str(repo / ".venv" / "bin" / "python"), "3.12")
    (repo / ".venv" / f".installed-{stamp}").touch()
    (repo / ".venv" / "keep").touch()
    done = run()
    assert done.returncode == 0 and "is broken" not in done.stderr and "creating" not in done.stdout
    assert (repo / ".venv" / "keep").exists()
