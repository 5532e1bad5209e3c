"""A failing asset check is said by the command that ran it (not left for the UI). Real Dagster run."""

from __future__ import annotations

import dagster as dg

from face_pipeline import cli


def test_a_failed_check_is_reported_with_its_problem(dagster_instance, capsys):
    @dg.asset
    def library() -> int:
        return 1

    @dg.asset_check(asset=library)
    def copies_agree() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR,
                                   metadata={"problem": "the vector store has no collection faces [8 faces]", "problems": 1})

    @dg.asset_check(asset=library)
    def fine() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True)

    result = dg.materialize([library, copies_agree, fine], instance=dagster_instance)
    capsys.readouterr()  # the run's own log lines
    cli._report_failed_checks(result)
    err = capsys.readouterr().err
    assert err.strip() == "check copies_agree failed (error): the vector store has no collection faces [8 faces]"  # brackets kept
