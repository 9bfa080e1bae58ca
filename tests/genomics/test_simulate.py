"""Tests of the cohort simulator and its VCF writers (services/genomics/simulate.py)."""

from __future__ import annotations

import csv
from datetime import timedelta
from pathlib import Path

import numpy as np
import pysam
import pytest

from services.errors import InvalidInput
from services.genomics.simulate import (
    DIALECTS,
    GRCH38_CONTIG_LENGTHS,
    HOTSPOTS_PATH,
    Cohort,
    SimulationParams,
    fraction_at,
    simulate_cohort,
    write_plasma_vcf,
    write_records,
    write_tissue_vcf,
)
from services.genomics.types import Locus
from services.genomics.vcf import read_vcf


@pytest.fixture(scope="module")
def cohort() -> Cohort:
    return simulate_cohort(40, 6, np.random.default_rng(42))


def test_same_seed_same_cohort_other_seed_other_cohort(cohort: Cohort) -> None:
    assert simulate_cohort(40, 6, np.random.default_rng(42)) == cohort
    assert simulate_cohort(40, 6, np.random.default_rng(43)) != cohort


def test_cohort_shape_and_truth(cohort: Cohort) -> None:
    params = cohort.params
    assert len(cohort.patients) == 40
    assert len({p.patient_id for p in cohort.patients}) == 40
    relapsing = [p for p in cohort.patients if p.relapsing]
    assert 0 < len(relapsing) < 40
    for patient in cohort.patients:
        assert len(patient.loci) == params.n_loci and len(patient.draws) == 6
        assert len({lo.key for lo in patient.loci}) == params.n_loci
        assert (patient.clinical_relapse_date is not None) == patient.relapsing
        days = [d.days_since_surgery for d in patient.draws]
        assert days == sorted(days)
        for draw in patient.draws:
            assert draw.collection_date == patient.surgery_date + timedelta(
                days=draw.days_since_surgery
            )
            assert len(draw.alt_reads) == len(draw.depths) == params.n_loci
            assert all(0 <= m <= r for m, r in zip(draw.alt_reads, draw.depths, strict=True))
            if not patient.relapsing:
                assert draw.true_fraction == 0.0
        for locus in patient.loci:
            assert 0 < locus.error_rate < 0.01 and 0 < locus.tumor_af < 0.5
            assert len(cohort.controls[locus.key]) == params.n_controls
    for patient in relapsing:
        fractions = [d.true_fraction for d in patient.draws]
        assert fractions == sorted(fractions)  # exponential rise towards clinical relapse
        assert patient.clinical_relapse_date is not None
        relapse_day = (patient.clinical_relapse_date - patient.surgery_date).days
        assert fraction_at(relapse_day, relapse_day, params) == params.fraction_at_relapse


def test_depths_and_error_rates_are_realistic(cohort: Cohort) -> None:
    depths = np.array([d.depths for p in cohort.patients for d in p.draws])
    assert 1000 < np.median(depths) < 6000
    rates = np.array([lo.error_rate for p in cohort.patients for lo in p.loci])
    assert 1e-5 < np.mean(rates) < 1e-4


def test_loci_are_grch38_and_include_hotspots(cohort: Cohort) -> None:
    with HOTSPOTS_PATH.open(newline="") as handle:
        table = {
            (r["grch38_chrom"], int(r["grch38_pos"]), r["ref"], r["alt"]): r
            for r in csv.DictReader(handle, delimiter="\t")
        }
    hotspot_loci = [lo for p in cohort.patients for lo in p.loci if lo.hotspot]
    assert hotspot_loci
    for locus in hotspot_loci:
        row = table[(locus.chrom, locus.pos, locus.ref, locus.alt)]
        assert row["gene"] == locus.gene in {"ESR1", "PIK3CA"}
        assert row["protein"] == locus.protein
    for patient in cohort.patients:
        for locus in patient.loci:
            assert locus.chrom in GRCH38_CONTIG_LENGTHS
            assert 1 <= locus.pos <= GRCH38_CONTIG_LENGTHS[locus.chrom]
            assert locus.key == f"{locus.chrom}:{locus.pos}:{locus.ref}>{locus.alt}"


def test_plasma_vcf_round_trip(cohort: Cohort, tmp_path: Path) -> None:
    patient = next(p for p in cohort.patients if p.relapsing)
    draw = max(patient.draws, key=lambda d: d.true_fraction)
    path = write_plasma_vcf(tmp_path / f"{draw.sample_id}.vcf.gz", draw, patient, dialect="mutect2")
    assert Path(f"{path}.tbi").exists()
    with open(path, "rb") as raw:
        assert raw.read(4) == b"\x1f\x8b\x08\x04"  # BGZF, not plain gzip
    with pysam.VariantFile(str(path)) as vcf:
        header = str(vcf.header)
        assert header.startswith("##fileformat=VCFv4.2")
        assert "##reference=GRCh38" in header
        assert list(vcf.header.samples) == [draw.sample_id]
        for chrom, contig in vcf.header.contigs.items():
            assert contig.length == GRCH38_CONTIG_LENGTHS[chrom]
        records = {f"{r.chrom}:{r.pos}:{r.ref}>{r.alts[0]}": r for r in vcf}
    expected = {
        lo.key: (m, r) for lo, m, r in zip(patient.loci, draw.alt_reads, draw.depths, strict=True)
    }
    assert set(records) == set(expected)  # force-called: zero-count loci included
    for key, record in records.items():
        sample = record.samples[draw.sample_id]
        alt, depth = expected[key]
        assert sample["AD"] == (depth - alt, alt)
        assert sample["DP"] == depth
        assert sample["AF"][0] == pytest.approx(alt / depth, abs=1e-6)
        assert sample["GT"] == ((0, 1) if alt else (0, 0))
        assert list(record.filter) == ["PASS"]
    with pysam.VariantFile(str(path)) as vcf:
        locus = patient.loci[0]
        fetched = list(vcf.fetch(locus.chrom, locus.pos - 1, locus.pos))
        assert [r.pos for r in fetched] == [locus.pos]


def test_tissue_vcf_round_trip(cohort: Cohort, tmp_path: Path) -> None:
    patient = cohort.patients[0]
    path = write_tissue_vcf(tmp_path / "tissue.vcf.gz", patient, dialect="mutect2")
    with pysam.VariantFile(str(path)) as vcf:
        assert list(vcf.header.samples) == [patient.tissue_sample_id]
        records = list(vcf)
    assert len(records) == len(patient.tissue)
    by_key = {v.key: v for v in patient.tissue}
    for record in records:
        variant = by_key[f"{record.chrom}:{record.pos}:{record.ref}>{record.alts[0]}"]
        sample = record.samples[patient.tissue_sample_id]
        assert sample["AD"][1] == variant.alt_reads and sample["DP"] == variant.depth
        assert list(record.filter) == [variant.filter]
    assert {v.kind for v in patient.tissue} == {"clonal", "subclonal", "germline", "ch", "artefact"}
    positions = [(list(GRCH38_CONTIG_LENGTHS).index(r.chrom), r.pos) for r in records]
    assert positions == sorted(positions)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        SimulationParams(n_loci=0)
    with pytest.raises(InvalidInput):
        simulate_cohort(-1, 2, np.random.default_rng(0))
    small = simulate_cohort(1, 1, np.random.default_rng(0))
    with pytest.raises(InvalidInput):
        write_tissue_vcf(tmp_path / "plain.vcf", small.patients[0])


def test_dialects_are_chosen_per_patient_without_changing_the_counts(cohort: Cohort) -> None:
    assert {p.dialect for p in cohort.patients} == set(DIALECTS)
    one = simulate_cohort(40, 6, np.random.default_rng(42), SimulationParams(dialects=("vardict",)))
    assert {p.dialect for p in one.patients} == {"vardict"}
    for mixed, single in zip(cohort.patients, one.patients, strict=True):
        assert mixed.draws == single.draws and mixed.tissue == single.tissue
    with pytest.raises(InvalidInput):
        SimulationParams(dialects=("gatk3",))


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_dialect_round_trips_through_read_vcf(
    cohort: Cohort, dialect: str, tmp_path: Path
) -> None:
    """The plasma and tissue VCFs of each dialect give back exactly the simulated counts."""
    patient = next(p for p in cohort.patients if p.relapsing)
    draw = max(patient.draws, key=lambda d: d.true_fraction)
    plasma = write_plasma_vcf(tmp_path / "plasma.vcf.gz", draw, patient, dialect=dialect)
    read = read_vcf(
        plasma,
        display_name=plasma.name,
        sample_type="plasma",
        genome_build="GRCh38",
        tracked=frozenset(Locus.parse(lo.key) for lo in patient.loci),
    )
    got = {v.locus.key: (v.alt_reads, v.depth) for v in read.variants if v.locus is not None}
    expected = {
        lo.key: (m, r) for lo, m, r in zip(patient.loci, draw.alt_reads, draw.depths, strict=True)
    }
    assert got == expected
    assert all(v.quantitative and v.passed for v in read.variants)
    assert read.tumor_sample == ("TUMOR" if dialect == "strelka2" else draw.sample_id)

    tissue = write_tissue_vcf(tmp_path / "tissue.vcf.gz", patient, dialect=dialect)
    read = read_vcf(tissue, display_name=tissue.name, sample_type="tissue", genome_build="GRCh38")
    by_key = {v.locus.key: v for v in read.variants if v.locus is not None}
    # a tissue sample keeps every PASS call (non-PASS ones only in monitored genes)
    passed = [v for v in patient.tissue if v.filter == "PASS"]
    assert len(passed) >= len(patient.loci)
    for variant in passed:
        call = by_key[variant.key]
        assert (call.alt_reads, call.depth) == (variant.alt_reads, variant.depth)
        assert call.passed


@pytest.mark.parametrize("dialect", ["strelka2", "mutect2", "varscan2", "vardict", "bcftools"])
def test_an_indel_round_trips_in_every_dialect(dialect: str, tmp_path: Path) -> None:
    """Strelka2 writes indels as TAR/TIR; the others as for SNVs."""
    path = write_records(
        tmp_path / "indel.vcf.gz",
        "S1",
        [
            ("chr3", 179_218_303, "GAA", "G", 7, 2500, "PASS"),
            ("chr3", 179_234_297, "A", "G", 0, 900, "PASS"),
        ],
        SimulationParams(),
        dialect=dialect,
    )
    read = read_vcf(
        path,
        display_name=path.name,
        sample_type="plasma",
        genome_build="GRCh38",
        tracked=frozenset(
            {Locus("chr3", 179_218_303, "GAA", "G"), Locus("chr3", 179_234_297, "A", "G")}
        ),
    )
    counts = {(v.pos, v.ref, v.alt): (v.alt_reads, v.depth) for v in read.variants}
    assert counts == {(179_218_303, "GAA", "G"): (7, 2500), (179_234_297, "A", "G"): (0, 900)}
