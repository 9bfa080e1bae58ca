"""Tests of the tracked-set choice (services/genomics/tracking.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from services.errors import InvalidInput
from services.genomics.simulate import SimTissueVariant, simulate_cohort
from services.genomics.tracking import (
    TissueCandidate,
    TrackingDecision,
    TrackingParams,
    select_tracked,
)

PARAMS = TrackingParams()


def candidate(key: str, vaf: float, **changes: object) -> TissueCandidate:
    chrom, pos, change = key.split(":")
    ref, alt = change.split(">")
    base = TissueCandidate(
        key=key,
        gene="",
        chrom=chrom,
        pos=int(pos),
        ref=ref,
        alt=alt,
        vaf=vaf,
        alt_reads=round(vaf * 500),
        depth=500,
        passed=True,
        normal_vaf=0.0,
        normal_depth=300,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def clonal_set(n: int, vaf: float = 0.3) -> list[TissueCandidate]:
    return [candidate(f"chr3:{1000 + i}:C>A", vaf + 0.001 * i) for i in range(n)]


def by_key(decisions: list[TrackingDecision]) -> dict[str, TrackingDecision]:
    return {d.key: d for d in decisions}


def from_simulated(variant: SimTissueVariant) -> TissueCandidate:
    return TissueCandidate(
        key=variant.key,
        gene=variant.gene,
        chrom=variant.chrom,
        pos=variant.pos,
        ref=variant.ref,
        alt=variant.alt,
        vaf=variant.vaf,
        alt_reads=variant.alt_reads,
        depth=variant.depth,
        passed=variant.filter == "PASS",
        normal_vaf=variant.normal_alt_reads / variant.normal_depth,
        normal_depth=variant.normal_depth,
    )


def test_simulated_tissue_gives_back_the_clonal_set() -> None:
    cohort = simulate_cohort(60, 0, np.random.default_rng(11))
    expected_reasons = {
        "subclonal": {"subclonal", "low_vaf", "low_alt_reads"},
        "germline": {"germline_in_normal"},
        "ch": {"ch_gene"},
        "artefact": {"not_pass"},
    }
    for patient in cohort.patients:
        decisions = select_tracked([from_simulated(v) for v in patient.tissue], PARAMS)
        assert {d.key for d in decisions if d.kept} == {locus.key for locus in patient.loci}
        kinds = {v.key: v.kind for v in patient.tissue}
        for d in decisions:
            if not d.kept:
                assert d.reason in expected_reasons[kinds[d.key]], d
                assert d.detail and d.rank is None
        assert [d.key for d in decisions] == [v.key for v in patient.tissue]  # input order


def test_every_drop_has_its_reason() -> None:
    candidates = [
        *clonal_set(5),
        candidate("chr1:10:G>A", 0.31, passed=False),
        candidate("chr1:20:G>GA", 0.31),
        candidate("chr1:30:G>A", 0.31, depth=30, alt_reads=9),
        candidate("chr1:40:G>A", 0.31, alt_reads=3, depth=10_000),
        candidate("chr1:50:G>A", 0.01, alt_reads=10, depth=1000),
        candidate("chr1:60:G>A", 0.31, gene="TP53"),
        candidate("chr1:70:G>A", 0.48, normal_vaf=0.47),
        candidate("chr1:80:G>A", 0.31, normal_vaf=0.02),
        candidate("chr1:90:G>A", 0.5, normal_vaf=None, normal_depth=None),
        candidate("chr1:95:G>A", 1.0, normal_vaf=0.0, normal_depth=5),
        candidate("chr1:100:G>A", 0.05),
        candidate("chr3:1000:C>A", 0.3),
        candidate("chr3:1001:C>T", 0.2),
    ]
    decisions = by_key(select_tracked(candidates, PARAMS))
    assert decisions["chr1:10:G>A"].reason == "not_pass"
    assert decisions["chr1:20:G>GA"].reason == "not_snv"
    assert decisions["chr1:30:G>A"].reason == "low_depth"
    assert decisions["chr1:40:G>A"].reason == "low_alt_reads"
    assert decisions["chr1:50:G>A"].reason == "low_vaf"
    assert decisions["chr1:60:G>A"].reason == "ch_gene"
    assert decisions["chr1:70:G>A"].reason == "germline_in_normal"
    assert decisions["chr1:80:G>A"].reason == "present_in_normal"
    assert decisions["chr1:90:G>A"].reason == "possible_germline_no_normal"
    # a normal too shallow to be informative counts as no normal
    assert decisions["chr1:95:G>A"].reason == "possible_germline_no_normal"
    assert decisions["chr1:100:G>A"].reason == "subclonal"
    assert "median of the top 5" in decisions["chr1:100:G>A"].detail
    assert decisions["chr3:1001:C>T"].reason == "same_position"
    kept = [d for d in select_tracked(candidates, PARAMS) if d.kept]
    assert len(kept) == 5 and all(d.reason == "tracked" for d in kept)
    duplicates = select_tracked([*clonal_set(3), clonal_set(1)[0]], PARAMS)
    assert duplicates[-1].reason == "duplicate_key" and not duplicates[-1].kept


def test_ranked_by_vaf_and_cut_to_max_loci() -> None:
    candidates = clonal_set(20)
    decisions = select_tracked(candidates, TrackingParams(max_loci=16))
    kept = [d for d in decisions if d.kept]
    assert len(kept) == 16
    assert sorted(d.rank for d in kept if d.rank) == list(range(1, 17))
    dropped = [d for d in decisions if not d.kept]
    assert {d.reason for d in dropped} == {"beyond_max_loci"}
    # the four lowest VAFs are the ones cut
    assert {d.key for d in dropped} == {c.key for c in candidates[:4]}
    assert by_key(decisions)[candidates[-1].key].rank == 1


def test_clonality_is_relative_to_the_top_cluster_not_one_amplified_locus() -> None:
    candidates = [*clonal_set(6, vaf=0.2), candidate("chr7:55:A>G", 0.9, normal_vaf=0.0)]
    decisions = by_key(select_tracked(candidates, PARAMS))
    # an amplified locus at 0.9 does not make the 0.2 cluster "subclonal"
    assert all(decisions[c.key].kept for c in candidates)


def test_ch_gene_list_is_configurable() -> None:
    tp53 = candidate("chr17:7675088:C>T", 0.32, gene="TP53")
    candidates = [*clonal_set(4), tp53]
    assert not by_key(select_tracked(candidates, PARAMS))[tp53.key].kept
    relaxed = TrackingParams(ch_genes=tuple(g for g in PARAMS.ch_genes if g != "TP53"))
    assert by_key(select_tracked(candidates, relaxed))[tp53.key].kept


def test_empty_input_and_bad_params() -> None:
    assert select_tracked([], PARAMS) == []
    with pytest.raises(InvalidInput):
        TrackingParams(max_loci=0)
    with pytest.raises(InvalidInput):
        TrackingParams(clonal_fraction=0.0)
