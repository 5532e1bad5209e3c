"""Child process of ``serve``'s run launcher: executes one job exactly as the CLI does (``cli._run_job``), with
the run id ``serve`` already returned to the caller.

    python -m face_pipeline.web.run_worker organize|train RUN_ID RUN_CONFIG_JSON ACTOR
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    kind, run_id, run_config, actor = argv
    from face_pipeline import cli
    from face_pipeline.settings import disable_telemetry
    from face_pipeline.web.runs import JOBS

    disable_telemetry()
    cli._settings(runs_jobs=True)  # prepares the home and points DAGSTER_HOME at its embedded instance
    tags = {"face_pipeline/launched_by": actor}
    try:
        if kind == "train":
            cli._run_job(JOBS[kind], run_config=json.loads(run_config), run_id=run_id, tags=tags,
                         failure_is_an_answer=cli._only_the_gate_refused)
        else:
            cli._run_job(JOBS[kind], run_config=json.loads(run_config), run_id=run_id, tags=tags)
    except cli.CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
