"""Fast writers of realistic GRCh38 VCFs for the benchmarks: a whole-genome-sized file (2M
records by default, written as text and compressed with BGZF) and hotspot-panel plasma files.

The simulator's writers (services.genomics.simulate) build every record through pysam, which
is right for a few hundred records and far too slow for millions; these write text lines."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pysam

from services.genomics.regions import GENE_REGIONS
from services.genomics.simulate import GRCH38_CONTIG_LENGTHS, Hotspot, load_hotspots

AUTOSOMES = tuple(f"chr{i}" for i in range(1, 23))
BASES = np.array(list("ACGT"))
SAMPLE = "TUMOR"
# Share of records with FILTER=PASS in the large file: a filtered whole-genome somatic call set
# keeps most records as non-PASS (germline, weak_evidence, ...). Tissue ingest stores the PASS
# ones, so this sets how many rows a 2M-record tissue upload writes.
PASS_RATE = 0.01
FILTERS = ("germline", "weak_evidence", "normal_artifact", "strand_bias")
GENE_RECORDS = 2_000  # extra records inside ESR1/PIK3CA/ERBB2/AKT1, on top of the uniform ones


def header(sample: str = SAMPLE, source: str = "ctdna-bench") -> str:
    lines = [
        "##fileformat=VCFv4.2",
        f"##source={source}",
        "##reference=file:///refs/GRCh38_full_analysis_set_plus_decoy_hla.fa",
        f"##tumor_sample={sample}",
    ]
    lines += [
        f"##contig=<ID={c},length={n},assembly=GRCh38>" for c, n in GRCH38_CONTIG_LENGTHS.items()
    ]
    lines += [
        '##FILTER=<ID=PASS,Description="All filters passed">',
        *(f'##FILTER=<ID={f},Description="{f}">' for f in FILTERS),
        '##INFO=<ID=DP,Number=1,Type=Integer,Description="Total depth">',
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        '##FORMAT=<ID=AD,Number=R,Type=Integer,Description="Allelic depths">',
        '##FORMAT=<ID=AF,Number=A,Type=Float,Description="Allele fraction">',
        '##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Read depth">',
        "\t".join(
            ["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", sample]
        ),
    ]
    return "\n".join(lines) + "\n"


def _line(
    chrom: str, pos: int, ref: str, alts: Sequence[str], filt: str, reads: Sequence[int], depth: int
) -> str:
    """One record; `reads` holds the alt reads of each ALT (AD and AF are Number=R / A)."""
    ad = ",".join(str(r) for r in (depth - sum(reads), *reads))
    af = ",".join(f"{r / depth:.4f}" for r in reads)
    gt = "0/1" if any(reads) else "0/0"
    return (
        f"{chrom}\t{pos}\t.\t{ref}\t{','.join(alts)}\t50\t{filt}\tDP={depth}\tGT:AD:AF:DP\t"
        f"{gt}:{ad}:{af}:{depth}\n"
    )


def write_large_vcf(path: Path, records: int, *, seed: int = 10) -> Path:
    """A BGZF VCF of `records` records on chr1..chr22 (uniform by length, plus GENE_RECORDS in
    the four monitored genes), mostly SNVs with some indels and multi-allelic sites."""
    rng = np.random.default_rng(seed)
    lengths = np.array([GRCH38_CONTIG_LENGTHS[c] for c in AUTOSOMES], dtype=np.float64)
    gene_n = min(GENE_RECORDS, records // 10)
    per_chrom = rng.multinomial(records - gene_n, lengths / lengths.sum())
    genes = GENE_REGIONS["GRCh38"]
    gene_chrom = rng.integers(0, len(genes), size=gene_n)
    text = path.with_suffix(".tmp")
    with text.open("w") as out:
        out.write(header())
        for index, chrom in enumerate(AUTOSOMES):
            positions = rng.integers(
                1_000_000, GRCH38_CONTIG_LENGTHS[chrom] - 1_000_000, size=int(per_chrom[index])
            )
            extra = [
                int(rng.integers(genes[g].start, genes[g].end))
                for g in gene_chrom
                if genes[g].chrom == chrom
            ]
            positions = np.unique(np.concatenate([positions, np.array(extra, dtype=np.int64)]))
            n = len(positions)
            ref_i = rng.integers(0, 4, size=n)
            refs = BASES[ref_i].tolist()
            alts = BASES[(ref_i + rng.integers(1, 4, size=n)) % 4].tolist()
            others = BASES[(ref_i + 2) % 4].tolist()
            tails = ["".join(t) for t in BASES[rng.integers(0, 4, size=(n, 3))].tolist()]
            kind = rng.random(n).tolist()
            filters = np.where(
                rng.random(n) < PASS_RATE,
                "PASS",
                np.array(FILTERS)[rng.integers(0, len(FILTERS), size=n)],
            ).tolist()
            depth = rng.integers(20, 120, size=n)
            alt_reads = rng.binomial(depth, 0.3).tolist()
            depths = depth.tolist()
            pos_list = positions.tolist()
            chunk: list[str] = []
            for i in range(n):
                ref, alleles, reads = refs[i], [alts[i]], [alt_reads[i]]
                if kind[i] < 0.04:  # deletion
                    alleles, ref = [ref], ref + tails[i]
                elif kind[i] < 0.08:  # insertion
                    alleles = [ref + tails[i][:2]]
                elif kind[i] < 0.10:  # multi-allelic SNV
                    alleles.append(others[i])
                    reads.append(1)
                chunk.append(_line(chrom, pos_list[i], ref, alleles, filters[i], reads, depths[i]))
            out.writelines(chunk)
    tmp_gz = path.with_suffix(".gz.tmp")
    pysam.tabix_compress(str(text), str(tmp_gz), force=True)
    text.unlink()
    os.replace(tmp_gz, path)
    return path


def panel_records(
    rng: np.random.Generator, hotspots: Sequence[Hotspot], size: int
) -> list[tuple[str, int, str, str, str, int, int]]:
    """A force-called breast-cancer panel: every hotspot, some other positions in the four
    monitored genes, and the rest in other panel genes across the genome (not stored for a
    plasma sample, but read)."""
    records: list[tuple[str, int, str, str, str, int, int]] = []
    level = int(rng.integers(1500, 6000))
    for h in hotspots:
        depth = max(50, int(level * rng.lognormal(0, 0.2)))
        alt_reads = int(rng.binomial(depth, 2e-4))
        records.append((h.chrom, h.pos, h.ref, h.alt, "PASS", alt_reads, depth))
    genes = GENE_REGIONS["GRCh38"]
    in_genes = max(0, min(20, size - len(records)))
    for i in range(size - len(records)):
        if i < in_genes:
            gene = genes[i % len(genes)]
            chrom, pos = gene.chrom, int(rng.integers(gene.start, gene.end))
        else:
            chrom = AUTOSOMES[int(rng.integers(0, len(AUTOSOMES)))]
            pos = int(rng.integers(1_000_000, GRCH38_CONTIG_LENGTHS[chrom] - 1_000_000))
        ref = str(BASES[rng.integers(0, 4)])
        alt = str(BASES[(np.searchsorted(BASES, ref) + rng.integers(1, 4)) % 4])
        depth = max(50, int(level * rng.lognormal(0, 0.2)))
        filt = "PASS" if rng.random() < 0.9 else "weak_evidence"
        records.append((chrom, pos, ref, alt, filt, int(rng.binomial(depth, 5e-4)), depth))
    order = {c: i for i, c in enumerate(GRCH38_CONTIG_LENGTHS)}
    records.sort(key=lambda r: (order[r[0]], r[1]))
    return records


def write_panel_vcf(path: Path, *, seed: int, size: int = 300, sample: str = SAMPLE) -> Path:
    """A BGZF panel VCF of `size` records; each seed gives different depths (distinct bytes)."""
    rng = np.random.default_rng(seed)
    records = panel_records(rng, load_hotspots(), size)
    seen: set[tuple[str, int]] = set()
    lines = []
    for chrom, pos, ref, alt, filt, alt_reads, depth in records:
        if (chrom, pos) in seen:
            continue
        seen.add((chrom, pos))
        lines.append(_line(chrom, pos, ref, [alt], filt, [alt_reads], depth))
    text = path.with_suffix(".txt")
    text.write_text(header(sample, source=f"ctdna-bench panel seed={seed}") + "".join(lines))
    pysam.tabix_compress(str(text), str(path), force=True)
    text.unlink()
    return path


def targets_bed(path: Path) -> Path:
    """The four monitored gene spans (GRCh38) as BED (0-based start, end exclusive)."""
    path.write_text("".join(f"{g.chrom}\t{g.start - 1}\t{g.end}\n" for g in GENE_REGIONS["GRCh38"]))
    return path
