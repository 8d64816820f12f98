"""`make deploy`: register our block types, create the work pool if missing, deploy everything in prefect.yaml."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parent.parent


def pool_name() -> str:
    spec = yaml.safe_load((PROJECT / "prefect.yaml").read_text())
    return spec["definitions"]["work_pool"]["name"]


def prefect(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    exe = str(Path(sys.executable).with_name("prefect"))
    env = {**os.environ, "MA_PROJECT_DIR": str(PROJECT)}
    return subprocess.run([exe, "--no-prompt", *args], cwd=PROJECT, env=env, check=check,
                          capture_output=True, text=True)


def main() -> None:
    prefect("block", "register", "-m", "blocks")
    pool = pool_name()
    if prefect("work-pool", "inspect", pool, check=False).returncode != 0:
        prefect("work-pool", "create", pool, "--type", "process")
    done = prefect("deploy", "--all")
    print(done.stdout[-2000:])
    print(f"deployed every flow in prefect.yaml to work pool {pool!r}")


if __name__ == "__main__":
    main()
