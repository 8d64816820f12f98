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


def register_block_types() -> None:
    """What `prefect block register -m blocks` does, without starting another Prefect CLI."""
    import blocks
    for name in blocks.__all__:
        getattr(blocks, name).register_type_and_schema()


def ensure_work_pool(pool: str) -> None:
    """A process work pool named `pool` with Prefect's default job template, unless one exists."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker
    template = ProcessWorker.get_default_base_job_template()
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process", base_job_template=template))
        except ObjectAlreadyExists:
            pass


def main() -> None:
    register_block_types()
    pool = pool_name()
    ensure_work_pool(pool)
    done = prefect("deploy", "--all")
    print(done.stdout[-2000:])
    print(f"deployed every flow in prefect.yaml to work pool {pool!r}")


if __name__ == "__main__":
    main()
