"""Build what several rows share, once, before any row is timed: the random ~100M and tiny
policies, the primed tiny policy and the training parquet (all under the run's work folder).

    python -m benchmarks.prepare --workdir DIR

A row whose artefact is missing (this step failed or timed out) builds it itself.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from benchmarks.common import log


def prepare(workdir: Path) -> None:
    from benchmarks.models import primed_policy, random_policy
    from benchmarks.trainer_harness import qa_parquet

    random_policy(workdir, "100m")
    primed_policy(workdir)
    qa_parquet(workdir)
    log("shared models and data are ready")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="build the benchmark's shared models and data")
    parser.add_argument("--workdir", required=True, help="the run's scratch folder")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    prepare(workdir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
