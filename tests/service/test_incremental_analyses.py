"""The service computes the serial analyses draw by draw (so a new sample costs one draw): the
result must be that of the scientific core's longitudinal_report on the whole series, and must
not depend on what the per-process cache holds."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pytest

from services.analysis import service
from services.genomics.longitudinal import (
    LocusObservation,
    LocusSeries,
    LongitudinalParams,
    longitudinal_report,
)


@dataclass
class _Patient:
    site: str = "site-incremental"
    patient_id: str = "INC-1"


def _series(rng: np.random.Generator, flag_truncal: bool) -> list[LocusSeries]:
    draws = [(f"S{i}", dt.date(2024, 1, 1) + dt.timedelta(days=30 * i)) for i in range(6)]
    series = []
    for j in range(12):
        observations = tuple(
            LocusObservation(sid, day, int(rng.integers(0, 30)), int(rng.integers(500, 3000)), 1e-4)
            for sid, day in draws
            if rng.random() < 0.7
        )
        if observations:
            truncal = flag_truncal and j < 4
            series.append(
                LocusSeries(f"chr3:{179234000 + j}:A>G", "PIK3CA", None, observations, truncal)
            )
    return series


def _fractions(report: object) -> list[tuple[object, ...]]:
    return [
        (t.sample_id, t.estimate, t.lower, t.upper, t.detected, t.p_value, t.lod95, t.n_loci)
        for t in report.tumour_fractions  # type: ignore[attr-defined]
    ]


@pytest.mark.parametrize("flag_truncal", [True, False])
def test_draw_by_draw_equals_the_whole_series_report(flag_truncal: bool) -> None:
    rng = np.random.default_rng(11)
    for _ in range(20):
        series = _series(rng, flag_truncal)
        whole = longitudinal_report(series, [], LongitudinalParams(), np.random.default_rng(0))
        mine = service._longitudinal(_Patient(), series, [])  # type: ignore[arg-type]
        assert _fractions(mine) == _fractions(whole)
        assert [(r.key, r.sample_id, r.evaluable) for r in mine.relative_ccfs] == [
            (r.key, r.sample_id, r.evaluable) for r in whole.relative_ccfs
        ]
        assert mine.math_scores == whole.math_scores


def test_results_do_not_depend_on_the_cache() -> None:
    series = _series(np.random.default_rng(5), True)
    first = service._longitudinal(_Patient(), series, [])  # type: ignore[arg-type]
    service._RCCF_CACHE.clear()
    fresh = service._longitudinal(_Patient(), series, [])  # type: ignore[arg-type]
    cached = service._longitudinal(_Patient(), series, [])  # type: ignore[arg-type]
    assert first.relative_ccfs == fresh.relative_ccfs == cached.relative_ccfs
    # One more draw leaves the earlier draws' Monte Carlo as it was.
    extra = [
        LocusSeries(
            s.key,
            s.gene,
            s.protein_change,
            (*s.observations, LocusObservation("S9", dt.date(2025, 1, 1), 9, 2000, 1e-4)),
            s.truncal,
        )
        for s in series
    ]
    longer = service._longitudinal(_Patient(), extra, [])  # type: ignore[arg-type]
    earlier = {(r.key, r.sample_id): r for r in first.relative_ccfs}
    assert all(
        earlier[(r.key, r.sample_id)] == r for r in longer.relative_ccfs if r.sample_id != "S9"
    )
