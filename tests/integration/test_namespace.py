"""raystream installs everything under ``raystream.``: a user project with its own ``engine``,
``operators``, ``checkpoint`` and ``jobs`` packages runs raystream jobs that use them, and the
wheel puts nothing but ``raystream`` at the top level of site-packages."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

USER_PACKAGES = {
    # the names most likely to collide: a user's own engine, operators, checkpoint and jobs
    "engine/__init__.py": "SCALE = 10\n",
    "operators/__init__.py": "def scale(x):\n    from engine import SCALE\n    return x * SCALE\n",
    "checkpoint/__init__.py": "LABEL = 'mine'\n",
    "jobs/__init__.py": "",
    "jobs/scaled.py": (
        "import sys\n"
        "import raystream as rs\n"
        "from checkpoint import LABEL\n"
        "from operators import scale\n"
        "\n"
        "def main() -> None:\n"
        "    env = rs.StreamEnvironment(parallelism=2)\n"
        "    out = env.from_collection(list(range(100))).map(scale).key_by(lambda x: x % 3)"
        ".reduce(lambda a, b: a + b, emit='final').execute_and_collect('user-packages')\n"
        "    print(LABEL, sorted(out))\n\n"
        "if __name__ == '__main__':\n"
        "    main()\n"
    ),
}


def _user_project(tmp_path: Path) -> Path:
    for rel, text in USER_PACKAGES.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAYSTREAM_ADDRESS", "PYTHONPATH")}
    env["RAY_AUTH_MODE"] = "disabled"
    return env


def test_import_raystream_beside_user_packages_of_the_same_names(tmp_path):
    project = _user_project(tmp_path)
    code = ("import raystream, engine, operators, checkpoint, jobs\n"
            "from raystream.engine import Barrier\n"
            "print(engine.SCALE, checkpoint.LABEL, raystream.StreamEnvironment.__module__, Barrier.__module__)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=project, env=_clean_env(), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["10", "mine", "raystream.operators.environment", "raystream.engine.events"]


@pytest.mark.slow
def test_job_using_its_own_engine_operators_checkpoint_and_jobs_packages_runs_on_ray(tmp_path):
    """The job's functions come from the user's ``operators`` package (which imports the user's
    ``engine``); Ray workers import both next to raystream's own packages."""
    project = _user_project(tmp_path)
    out = subprocess.run([sys.executable, "-m", "jobs.scaled"], cwd=project, env=_clean_env(),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    # the final sums of 0, 10, ..., 990 by x % 3 (x = 0..99)
    sums = sorted(sum(10 * x for x in range(100) if x % 3 == k) for k in range(3))
    assert out.stdout.strip().splitlines()[-1] == f"mine {sums}"


def test_wheel_installs_only_the_raystream_package(tmp_path):
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path), "-q"], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = tmp_path.glob("raystream-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names}
    assert top == {"raystream", next(t for t in top if t.endswith(".dist-info"))}, sorted(top)
    for module in ("engine/task.py", "operators/environment.py", "checkpoint/storage.py",
                   "statefun_api/dispatcher.py", "jobs/cli.py", "jobs/wordcount.py"):
        assert f"raystream/{module}" in names
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "raystream = raystream.jobs.cli:main" in entry_points
