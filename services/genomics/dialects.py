"""Caller dialects: where each variant caller writes a sample's read counts, and which sample
column is the tumour.

Counts come from one ordered table of readers (`COUNT_READERS`); the first reader whose fields
are present and filled wins, so a file that carries both AD and AF is read from AD. The readers
see plain Python values copied out of the record by vcf.py, never pysam objects.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from services.errors import VcfError

SampleFields = Mapping[str, object]  # FORMAT key -> value as decoded (int, float, str, tuple)


@dataclass(frozen=True, slots=True)
class AlleleContext:
    """The record's alleles as written (before trimming), and which ALT is being read."""

    ref: str
    alts: tuple[str, ...]
    alt_index: int  # 1-based index into alts

    @property
    def alt(self) -> str:
        return self.alts[self.alt_index - 1]


@dataclass(frozen=True, slots=True)
class ReadCounts:
    alt_reads: int | None
    depth: int | None
    vaf: float | None
    source: str | None  # reader name

    @property
    def quantitative(self) -> bool:
        return self.alt_reads is not None and self.depth is not None


NO_COUNTS = ReadCounts(None, None, None, None)


@dataclass(frozen=True, slots=True)
class CountReader:
    """One dialect: the FORMAT fields it needs and how it turns them into counts."""

    name: str
    fields: tuple[str, ...]
    read: Callable[[SampleFields, AlleleContext], ReadCounts | None]


# --- value helpers ----------------------------------------------------------------------------


def _values(value: object) -> tuple[object, ...]:
    if value is None:
        return ()
    if isinstance(value, tuple | list):
        return tuple(value)
    if isinstance(value, str) and "," in value:
        return tuple(value.split(","))
    return (value,)


def _int(value: object) -> int | None:
    # Integers arrive as int, or as text when a caller declared the field Type=String (PCGR).
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float):
        return int(value) if value.is_integer() and value >= 0 else None
    if isinstance(value, str):
        text = value.strip()
        return int(text) if text.isascii() and text.isdigit() else None  # not "²"
    return None


def _ints(value: object) -> tuple[int | None, ...]:
    return tuple(_int(v) for v in _values(value))


def caller_fraction(value: object) -> float | None:
    """A caller's allele fraction as a float in [0, 1]: 0.25, "0.25" or VarScan's "25%"."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        # htslib stores VCF floats as float32: 0.012 arrives as 0.012000000104308128.
        number = float(f"{value:.7g}")
    elif isinstance(value, str):
        text = value.strip()
        percent = text.endswith("%")
        try:
            number = float(text.rstrip("%"))
        except ValueError:
            return None
        if percent:
            number /= 100.0  # VarScan2 FREQ: "38.46%"
    else:
        return None
    return number if 0.0 <= number <= 1.0 else None


def _allele_value(fields: SampleFields, key: str, allele: AlleleContext) -> object:
    """The Number=A element of `key` for this ALT (or the only value, for one ALT)."""
    values = _values(fields.get(key))
    if len(values) == len(allele.alts):
        return values[allele.alt_index - 1]
    if len(values) == 1 and len(allele.alts) == 1:
        return values[0]
    return None


def _counts(
    alt: int | None, depth: int | None, source: str, vaf: float | None = None
) -> ReadCounts:
    if alt is not None and depth is not None and alt > depth:
        depth = None  # inconsistent fields; do not let a VAF above 1 into the statistics
    if vaf is None and alt is not None and depth:
        vaf = alt / depth
    return ReadCounts(alt, depth, vaf, source)


# --- readers ----------------------------------------------------------------------------------


def _allelic_depths(ad_key: str, dp_key: str, name: str) -> CountReader:
    """REF and ALT depths per allele (Number=R): GATK/Mutect2/VarDict AD, PCGR ADT/ADC.

    The depth is the sum over alleles, so numerator and denominator count the same reads;
    the site DP is used only when an allele's depth is missing (".,21").
    VarScan2 writes AD as the ALT depth alone (Number=1) with RD for REF: handled here too.
    """

    def read(fields: SampleFields, allele: AlleleContext) -> ReadCounts | None:
        depths = _ints(fields.get(ad_key))
        if len(depths) == len(allele.alts) + 1:
            alt = depths[allele.alt_index]
            if alt is None:
                depth = _int(fields.get(dp_key))  # ".,." with a depth: PCGR's ADC/DPC
                return None if depth is None else ReadCounts(None, depth, None, name)
            total = sum(d for d in depths if d is not None) if None not in depths else None
            return _counts(alt, total if total is not None else _int(fields.get(dp_key)), name)
        if len(depths) == len(allele.alts):
            alt = depths[allele.alt_index - 1]
            ref = _int(fields.get("RD"))
            if alt is None:
                return None
            if ref is not None and None not in depths:
                return _counts(alt, ref + sum(d for d in depths if d is not None), f"{name}+RD")
            return _counts(alt, _int(fields.get(dp_key)), name)
        return None

    return CountReader(name, (ad_key,), read)


def _strelka_snv(fields: SampleFields, allele: AlleleContext) -> ReadCounts | None:
    # Strelka/Strelka2 somatic SNVs: tier-1 (first) value of AU/CU/GU/TU; depth is their sum,
    # the convention of vcf2maf.
    if len(allele.ref) != 1 or len(allele.alt) != 1 or allele.alt not in "ACGT":
        return None
    tier1: dict[str, int] = {}
    for base in "ACGT":
        values = _ints(fields.get(f"{base}U"))
        if not values or values[0] is None:
            return None
        tier1[base] = values[0]
    return _counts(tier1[allele.alt], sum(tier1.values()), "strelka_tier1")


def _strelka_indel(fields: SampleFields, allele: AlleleContext) -> ReadCounts | None:
    # Strelka/Strelka2 somatic indels: tier-1 TIR (indel-supporting) and TAR (reference).
    tir, tar = _ints(fields.get("TIR")), _ints(fields.get("TAR"))
    if not tir or not tar or tir[0] is None or tar[0] is None or len(allele.alts) != 1:
        return None
    return _counts(tir[0], tir[0] + tar[0], "strelka_indel_tier1")


def _vardict(fields: SampleFields, allele: AlleleContext) -> ReadCounts | None:
    # VarDict(Java): VD is the variant depth of the record's single ALT, DP the total depth.
    alt, depth = _int(fields.get("VD")), _int(fields.get("DP"))
    if alt is None or depth is None or len(allele.alts) != 1:
        return None
    return _counts(alt, depth, "VD/DP")


def _freebayes(fields: SampleFields, allele: AlleleContext) -> ReadCounts | None:
    # FreeBayes: AO per ALT (Number=A) and RO for REF; the depth is RO plus every AO.
    observed, ref = _ints(fields.get("AO")), _int(fields.get("RO"))
    if ref is None or len(observed) != len(allele.alts) or None in observed:
        return None
    alt = observed[allele.alt_index - 1]
    return _counts(alt, ref + sum(o for o in observed if o is not None), "AO/RO")


def _molecules(fields: SampleFields, allele: AlleleContext) -> ReadCounts | None:
    # UMI callers (QIAseq smCounter/smCounter2): VMT, the variant's molecule (UMI family)
    # count per ALT, over UMT, the molecules used at the site. For ctDNA the molecule is the
    # unit of evidence (PCR duplicates of one fragment are one observation), so these win
    # over the read counts the same file carries.
    alt, depth = _int(_allele_value(fields, "VMT", allele)), _int(fields.get("UMT"))
    if alt is None or depth is None:
        return None
    return _counts(alt, depth, "VMT/UMT")


def _flow_observations(fields: SampleFields, allele: AlleleContext) -> ReadCounts | None:
    # Ion Torrent (TVC, Oncomine cfDNA): the flow-evaluated FAO per ALT over FDP, the counts
    # its allele frequency comes from (AO/DP are the raw read counts before flow evaluation).
    alt, depth = _int(_allele_value(fields, "FAO", allele)), _int(fields.get("FDP"))
    if alt is None or depth is None:
        return None
    return _counts(alt, depth, "FAO/FDP")


def _fraction_times_depth(key: str, name: str) -> CountReader:
    """A caller allele fraction times DP: Mutect1 FA, Pisces VF, VarScan2 FREQ, FORMAT AF.

    The ALT count is rounded from the product; the reported VAF is the caller's own fraction.
    """

    def read(fields: SampleFields, allele: AlleleContext) -> ReadCounts | None:
        vaf = caller_fraction(_allele_value(fields, key, allele))
        depth = _int(fields.get("DP"))
        if vaf is None or depth is None:
            return None
        return _counts(round(vaf * depth), depth, name, vaf)

    return CountReader(name, (key, "DP"), read)


def _strand_counts(name: str) -> CountReader:
    """bcftools mpileup/call (and VarScan2) DP4: reference-forward, reference-reverse,
    alternate-forward, alternate-reverse reads. The alternate pair pools every ALT, so only a
    single-ALT record gets an alt count; a multi-allelic one gets the depth alone.
    """

    def read(fields: SampleFields, allele: AlleleContext) -> ReadCounts | None:
        strands = [d for d in _ints(fields.get("DP4")) if d is not None]
        if len(strands) != 4:
            return None
        depth = sum(strands)
        if len(allele.alts) != 1:
            return ReadCounts(None, depth, None, name)
        return _counts(strands[2] + strands[3], depth, name)

    return CountReader(name, ("DP4",), read)


COUNT_READERS: tuple[CountReader, ...] = (
    CountReader("VMT/UMT", ("VMT", "UMT"), _molecules),
    CountReader("FAO/FDP", ("FAO", "FDP"), _flow_observations),
    _allelic_depths("AD", "DP", "AD"),
    _allelic_depths("ADT", "DPT", "ADT/DPT"),
    CountReader("strelka_tier1", ("AU", "CU", "GU", "TU"), _strelka_snv),
    CountReader("strelka_indel_tier1", ("TAR", "TIR"), _strelka_indel),
    CountReader("VD/DP", ("VD", "DP"), _vardict),
    CountReader("AO/RO", ("AO", "RO"), _freebayes),
    _strand_counts("DP4"),
    _fraction_times_depth("FA", "FA*DP"),
    _fraction_times_depth("VF", "VF*DP"),
    _fraction_times_depth("FREQ", "FREQ*DP"),
    _fraction_times_depth("AF", "AF*DP"),
)

# PCGR puts the matched control's counts in the tumour's column (ADC/DPC next to ADT/DPT).
CONTROL_READERS: tuple[CountReader, ...] = (_allelic_depths("ADC", "DPC", "ADC/DPC"),)

# Site-level counts in INFO, for a file without a per-sample count: sites-only tumour-only
# files (LoFreq: DP, AF, DP4; VarDict: VD, DP, AF) and single-sample bcftools call output
# without FORMAT/AD. Only exact read counts make a call quantitative here: a site AF is often a
# population or genotype frequency, so AF times DP is a VAF with a depth, not a count.
INFO_READERS: tuple[CountReader, ...] = (
    CountReader("INFO/VMT/UMT", ("VMT", "UMT"), _molecules),
    CountReader("INFO/FAO/FDP", ("FAO", "FDP"), _flow_observations),
    _strand_counts("INFO/DP4"),
    _allelic_depths("AD", "DP", "INFO/AD"),
    CountReader("INFO/VD/DP", ("VD", "DP"), _vardict),
    CountReader("INFO/AO/RO", ("AO", "RO"), _freebayes),
)

_FRACTION_KEYS = ("AF", "FA", "VF", "FREQ")

FORMAT_KEYS: frozenset[str] = frozenset(
    {f for r in COUNT_READERS + CONTROL_READERS for f in r.fields}
    | {"DP", "RD", "DPT", "DPC", *_FRACTION_KEYS}
)

INFO_KEYS: frozenset[str] = frozenset({f for r in INFO_READERS for f in r.fields} | {"DP", "AF"})


def read_counts(
    fields: SampleFields,
    allele: AlleleContext,
    readers: Sequence[CountReader] = COUNT_READERS,
    *,
    partial: bool = True,
) -> ReadCounts:
    """Alt reads, depth and VAF of one sample for one ALT, by the first reader that applies.

    A sample with no ALT count is non-quantitative but may still have a depth: with `partial`,
    its DP and the caller's allele fraction; otherwise what the readers found.
    """
    depth_only: ReadCounts | None = None
    for reader in readers:
        if not all(fields.get(f) is not None for f in reader.fields):
            continue
        counts = reader.read(fields, allele)
        if counts is not None and counts.alt_reads is not None:
            return counts
        depth_only = depth_only or counts
    if not partial:
        return depth_only or NO_COUNTS
    found = [
        (key, vaf)
        for key in _FRACTION_KEYS
        if (vaf := caller_fraction(_allele_value(fields, key, allele))) is not None
    ]
    depth = _int(fields.get("DP"))
    if not found and depth is None:
        return depth_only or NO_COUNTS
    vaf_source, vaf = found[0] if found else (None, None)
    return ReadCounts(None, depth, vaf, "DP" if depth is not None else vaf_source)


def sample_counts(fields: SampleFields, site: SampleFields, allele: AlleleContext) -> ReadCounts:
    """The tumour's counts from its FORMAT fields (COUNT_READERS) or, when those hold no alt
    count, from the site's INFO fields (INFO_READERS; `site` is empty unless the file has at
    most one sample column, since INFO pools every column)."""
    counts = read_counts(fields, allele)
    if counts.quantitative or not site:
        return counts
    from_site = read_counts(site, allele, INFO_READERS)
    if from_site.quantitative or counts == NO_COUNTS:
        return from_site
    return counts


# --- which column is the tumour ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SampleHints:
    """What a header says about its sample columns."""

    tumor_sample: str | None = None  # Mutect2 ##tumor_sample=
    normal_sample: str | None = None  # Mutect2 ##normal_sample=
    source: str | None = None  # ##source=
    sample_lines: Mapping[str, str] | None = None  # ##SAMPLE=<ID=x,...>: ID -> rest, lowered


_NORMAL_WORDS = frozenset(
    {"normal", "germline", "blood", "buffy", "pbmc", "wbc", "control", "ctrl", "match",
     "matched", "n"}
)  # fmt: skip
_TUMOR_WORDS = frozenset(
    {"tumor", "tumour", "cancer", "plasma", "cfdna", "ctdna", "primary", "metastasis", "t"}
)
_TCGA = re.compile(r"TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}-(\d{2})", re.I)


def _name_role(name: str) -> str | None:
    """The role a sample name suggests: its words, or its TCGA sample-type code."""
    tcga = _TCGA.search(name)
    if tcga is not None:
        code = int(tcga.group(1))
        return "tumor" if 1 <= code <= 9 else "normal" if 10 <= code <= 19 else None
    words = set(re.split(r"[^a-z0-9]+", name.lower()))
    normal, tumor = bool(words & _NORMAL_WORDS), bool(words & _TUMOR_WORDS)
    if normal != tumor:
        return "normal" if normal else "tumor"
    return None


def _guess_columns(samples: Sequence[str], hints: SampleHints) -> tuple[str | None, str | None]:
    present = set(samples)
    # 1. Mutect2 names its columns in the header.
    tumor = hints.tumor_sample if hints.tumor_sample in present else None
    normal = hints.normal_sample if hints.normal_sample in present else None
    if tumor or normal:
        return tumor, normal
    # 2. Strelka, vcf2maf and many pipelines name the columns TUMOR and NORMAL.
    upper = {s.upper(): s for s in samples}
    tumor = upper.get("TUMOR") or upper.get("TUMOUR")
    normal = upper.get("NORMAL")
    if tumor or normal:
        return tumor, normal
    # 3. ##SAMPLE=<ID=...,Description="Primary tumour"> lines (TCGA/GDC, some GATK outputs).
    for sample_id, text in (hints.sample_lines or {}).items():
        if sample_id not in present:
            continue
        if "normal" in text or "germline" in text:
            normal = normal or sample_id
        elif "tumo" in text or "primary" in text or "metasta" in text:
            tumor = tumor or sample_id
    if tumor or normal:
        return tumor, normal
    # 4. VarDict paired mode writes the tumour column first, the matched normal second.
    if len(samples) == 2 and hints.source and "vardict" in hints.source.lower():
        return samples[0], samples[1]
    # 5. Words in the names ("P01_plasma", "P01-normal", "abc-match", TCGA barcodes).
    roles = {s: _name_role(s) for s in samples}
    tumors = [s for s, r in roles.items() if r == "tumor"]
    normals = [s for s, r in roles.items() if r == "normal"]
    return (tumors[0] if len(tumors) == 1 else None, normals[0] if len(normals) == 1 else None)


def resolve_samples(
    display_name: str,
    samples: Sequence[str],
    hints: SampleHints,
    *,
    tumor_sample: str | None,
    normal_sample: str | None,
    required: bool = True,
) -> tuple[str | None, str | None]:
    """(tumour column, normal column) of a file.

    Explicit arguments win; then Mutect2 ##tumor_sample/##normal_sample; then columns named
    TUMOR/NORMAL; then ##SAMPLE lines; then the only column of a single-sample file; then
    VarDict's column order and words in the names. An ambiguous multi-sample file is an error
    that lists the columns, unless `required` is False (a file without records).
    """
    listed = ", ".join(samples) if samples else "none (sites-only file)"
    for role, given in (("tumor_sample", tumor_sample), ("normal_sample", normal_sample)):
        if given is not None and given not in samples:
            raise VcfError(
                display_name, f"{role} {given!r} is not a sample column of this file ({listed})"
            )
    if tumor_sample is not None and tumor_sample == normal_sample:
        raise VcfError(display_name, f"tumor_sample and normal_sample are both {tumor_sample!r}")
    if not samples:
        return None, None
    guessed_tumor, guessed_normal = _guess_columns(samples, hints)
    tumor = tumor_sample or guessed_tumor
    normal = normal_sample or guessed_normal
    if normal == tumor:
        normal = normal_sample
    if tumor is None:
        if len(samples) == 1:
            tumor = samples[0]
        elif normal is not None and len(samples) == 2:
            tumor = samples[0] if samples[1] == normal else samples[1]
    if tumor is None and required:
        raise VcfError(
            display_name,
            f"cannot tell which sample column is the tumour ({listed}); pass tumor_sample",
        )
    return tumor, (normal if normal != tumor else None)
