"""Genome builds: telling GRCh37 from GRCh38, naming chromosomes one way, normalising alleles,
and lifting alleles between the two builds with the UCSC chain files.

Chromosome names inside the service are UCSC style ("chr3"); files may say "3", "chr3" or the
RefSeq accession ("NC_000003.12", whose version also names the build).
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

from services.errors import GenomeBuildError
from services.genomics.types import Build, Locus

# Primary-assembly lengths (GRCh37, GRCh38), as in the UCSC chain headers of hg19ToHg38; the
# mitochondrion is left out on purpose: hg19 chrM (16571) is not rCRS, b37 MT and GRCh38 chrM
# are both rCRS (16569), so its length cannot tell the builds apart.
CHROM_LENGTHS: dict[str, tuple[int, int]] = {
    "chr1": (249250621, 248956422),
    "chr2": (243199373, 242193529),
    "chr3": (198022430, 198295559),
    "chr4": (191154276, 190214555),
    "chr5": (180915260, 181538259),
    "chr6": (171115067, 170805979),
    "chr7": (159138663, 159345973),
    "chr8": (146364022, 145138636),
    "chr9": (141213431, 138394717),
    "chr10": (135534747, 133797422),
    "chr11": (135006516, 135086622),
    "chr12": (133851895, 133275309),
    "chr13": (115169878, 114364328),
    "chr14": (107349540, 107043718),
    "chr15": (102531392, 101991189),
    "chr16": (90354753, 90338345),
    "chr17": (81195210, 83257441),
    "chr18": (78077248, 80373285),
    "chr19": (59128983, 58617616),
    "chr20": (63025520, 64444167),
    "chr21": (48129895, 46709983),
    "chr22": (51304566, 50818468),
    "chrX": (155270560, 156040895),
    "chrY": (59373566, 57227415),
}

# RefSeq accession versions of the primary chromosomes (NCBI assembly reports
# GCF_000001405.25 = GRCh37.p13 and GCF_000001405.26 = GRCh38): (GRCh37, GRCh38).
_ACCESSION_VERSIONS: dict[int, tuple[int, int]] = {
    1: (10, 11), 2: (11, 12), 3: (11, 12), 4: (11, 12), 5: (9, 10), 6: (11, 12),
    7: (13, 14), 8: (10, 11), 9: (11, 12), 10: (10, 11), 11: (9, 10), 12: (11, 12),
    13: (10, 11), 14: (8, 9), 15: (9, 10), 16: (9, 10), 17: (10, 11), 18: (9, 10),
    19: (9, 10), 20: (10, 11), 21: (8, 9), 22: (10, 11), 23: (10, 11), 24: (9, 10),
}  # fmt: skip

_ACCESSION = re.compile(r"NC_0000(\d\d)\.(\d+)")
_MITO_ACCESSION = "NC_012920"

# Tokens a ##reference line (or a contig's assembly= attribute) uses for each build. Broad's
# "Homo_sapiens_assembly19" is b37; "human_g1k_v37" is the 1000 Genomes GRCh37 build.
_REFERENCE_TOKENS: tuple[tuple[Build | None, re.Pattern[str]], ...] = (
    ("GRCh37", re.compile(r"hg19|grch37|b37|hs37|g1k_v37|assembly19|ncbi37", re.I)),
    ("GRCh38", re.compile(r"hg38|grch38|b38|hs38|assembly38|ncbi38|gca_000001405\.15", re.I)),
    (None, re.compile(r"hg18|ncbi36|b36|hg17|ncbi35|chm13|t2t|hs1\b", re.I)),
)


def canonical_chrom(name: str) -> str:
    """UCSC-style name for a contig as a file writes it: "3", "chr3", "NC_000003.12" -> "chr3"."""
    match = _ACCESSION.fullmatch(name)
    if match is not None:
        number = int(match.group(1))
        return {23: "chrX", 24: "chrY"}.get(number, f"chr{number}")
    if name.startswith(_MITO_ACCESSION):
        return "chrM"
    bare = name[3:] if name[:3].lower() == "chr" else name
    if bare.upper() in ("M", "MT"):
        return "chrM"
    if bare.upper() in ("X", "Y"):
        return f"chr{bare.upper()}"
    return f"chr{bare}"


def accession_build(name: str) -> Build | None:
    """The build a RefSeq chromosome accession belongs to (NC_000001.10 -> GRCh37), if any."""
    match = _ACCESSION.fullmatch(name)
    if match is None:
        return None
    versions = _ACCESSION_VERSIONS.get(int(match.group(1)))
    if versions is None:
        return None
    version = int(match.group(2))
    if version == versions[0]:
        return "GRCh37"
    if version == versions[1]:
        return "GRCh38"
    return None


@dataclass(frozen=True, slots=True)
class BuildVote:
    """One piece of evidence about the build; `build` None means "some other assembly"."""

    build: Build | None
    source: str  # "contig_lengths" | "contig_accessions" | "reference_header"
    detail: str  # what was seen, for the error message


def contig_votes(contigs: Iterable[tuple[str, int | None]]) -> list[BuildVote]:
    """Votes from ##contig lines: primary-chromosome lengths, then RefSeq accession versions."""
    votes: list[BuildVote] = []
    for name, length in contigs:
        canon = canonical_chrom(name)
        by_accession = accession_build(name)
        if by_accession is not None:
            votes.append(BuildVote(by_accession, "contig_accessions", name))
        known = CHROM_LENGTHS.get(canon)
        if known is None or length is None:
            continue
        detail = f"{name} length {length}"
        if length == known[0]:
            votes.append(BuildVote("GRCh37", "contig_lengths", detail))
        elif length == known[1]:
            votes.append(BuildVote("GRCh38", "contig_lengths", detail))
        else:
            votes.append(BuildVote(None, "contig_lengths", detail))
    return votes


def reference_vote(texts: Iterable[str]) -> BuildVote | None:
    """A vote from ##reference / contig assembly= text naming exactly one assembly."""
    seen: dict[Build | None, str] = {}
    for text in texts:
        for build, pattern in _REFERENCE_TOKENS:
            match = pattern.search(text)
            if match is not None:
                seen.setdefault(build, match.group(0))
    if len(seen) != 1:
        return None  # silent, or names two assemblies ("hg19ToHg38"): no usable evidence
    build, token = next(iter(seen.items()))
    return BuildVote(build, "reference_header", token)


def resolve_build(
    display_name: str,
    *,
    given: Build | None,
    contigs: Iterable[tuple[str, int | None]],
    reference_texts: Iterable[str],
    hotspot_build: Callable[[], Build | None],
    allow_undetermined: bool = False,
) -> tuple[Build, str]:
    """Decide the sample's build and say how: ("GRCh38", "contig_lengths").

    Order: contig lengths / accessions (a given build they contradict is an error), then the
    given build, then the ##reference line, then exact matches to hotspot alleles of one build.
    Primary-chromosome lengths of neither build are an error unless a build is given.
    `hotspot_build` is only called when everything before it is silent, because it reads records.
    """
    all_votes = contig_votes(contigs)
    votes = [v for v in all_votes if v.build is not None]
    foreign = [v for v in all_votes if v.build is None]
    builds = {v.build for v in votes}
    if len(builds) > 1:
        by_build = {v.build: v.detail for v in votes}
        raise GenomeBuildError(
            display_name,
            f"contigs disagree about the build ({by_build['GRCh37']} is GRCh37, "
            f"{by_build['GRCh38']} is GRCh38)",
        )
    if votes:
        vote = votes[0]
        assert vote.build is not None
        if given is not None and given != vote.build:
            raise GenomeBuildError(
                display_name,
                f"genome_build {given} was given but contig {vote.detail} is {vote.build}",
            )
        return (given, "given") if given is not None else (vote.build, vote.source)
    if given is not None:
        # Lengths of neither build (NCBI36, or the made-up lengths of test fixtures) do not
        # contradict a build the lab states; only lengths of the other build do.
        return given, "given"
    if foreign:
        raise GenomeBuildError(
            display_name,
            f"contig {foreign[0].detail} matches neither GRCh37 nor GRCh38; pass genome_build "
            "if the calls are on one of them",
        )
    ref_vote = reference_vote(reference_texts)
    if ref_vote is not None:
        if ref_vote.build is None:
            raise GenomeBuildError(
                display_name,
                f"the header names assembly {ref_vote.detail!r}; only GRCh37 and GRCh38 are "
                "supported",
            )
        return ref_vote.build, ref_vote.source
    by_hotspot = hotspot_build()
    if by_hotspot is not None:
        return by_hotspot, "hotspot_match"
    if allow_undetermined:
        return "GRCh38", "undetermined"
    raise GenomeBuildError(
        display_name,
        "cannot tell the genome build (no ##contig lengths, no ##reference naming GRCh37 or "
        "GRCh38, no known hotspot allele); pass genome_build",
    )


# --- allele normalisation -------------------------------------------------------------------


class ReferenceSequence(Protocol):
    """Reference bases of one build, 0-based half-open like pysam.FastaFile.fetch."""

    @property
    def build(self) -> Build | None: ...

    def fetch(self, chrom: str, start: int, end: int) -> str: ...


def trim_alleles(pos: int, ref: str, alt: str) -> tuple[int, str, str]:
    """Drop the shared suffix, then the shared prefix, keeping one base in each allele.

    Suffix first, as in vt normalize (Tan et al. 2015), so that an anchored indel keeps its
    left anchor base: 100 CTT>CT becomes 100 CT>C, not 101 TT>T.
    """
    while len(ref) > 1 and len(alt) > 1 and ref[-1] == alt[-1]:
        ref, alt = ref[:-1], alt[:-1]
    while len(ref) > 1 and len(alt) > 1 and ref[0] == alt[0]:
        ref, alt, pos = ref[1:], alt[1:], pos + 1
    return pos, ref, alt


MAX_LEFT_SHIFT = 10_000  # a longer repeat than this is not a real indel context; stop shifting


def left_align(
    reference: ReferenceSequence, chrom: str, pos: int, ref: str, alt: str
) -> tuple[int, str, str]:
    """Shift an indel to its leftmost equivalent position (Tan, Abecasis & Kang 2015, Alg. 1).

    Input and output are trimmed, anchored VCF alleles. Returns the input unchanged when the
    reference disagrees with REF or runs out, so a wrong FASTA can never invent a variant.
    """
    if len(ref) == len(alt):
        return pos, ref, alt
    if reference.fetch(chrom, pos - 1, pos - 1 + len(ref)) != ref:
        return pos, ref, alt
    new_pos, new_ref, new_alt = pos, ref, alt
    for _ in range(MAX_LEFT_SHIFT):
        if new_ref and new_alt and new_ref[-1] == new_alt[-1]:
            new_ref, new_alt = new_ref[:-1], new_alt[:-1]
        elif not new_ref or not new_alt:
            if new_pos <= 1:
                return pos, ref, alt
            base = reference.fetch(chrom, new_pos - 2, new_pos - 1)
            if len(base) != 1:
                return pos, ref, alt
            new_pos, new_ref, new_alt = new_pos - 1, base + new_ref, base + new_alt
        else:
            break
    while len(new_ref) > 1 and len(new_alt) > 1 and new_ref[0] == new_alt[0]:
        new_ref, new_alt, new_pos = new_ref[1:], new_alt[1:], new_pos + 1
    return new_pos, new_ref, new_alt


def right_align(
    reference: ReferenceSequence, chrom: str, pos: int, ref: str, alt: str
) -> tuple[int, str, str]:
    """Shift an anchored indel (ref[0] == alt[0], one allele a single base) to its rightmost
    equivalent position: the mirror of left_align, for a chain that runs the other way.

    Returns the input unchanged when it is not such an indel or the reference disagrees.
    """
    if len(ref) == len(alt) or ref[:1] != alt[:1] or min(len(ref), len(alt)) != 1:
        return pos, ref, alt
    if reference.fetch(chrom, pos - 1, pos - 1 + len(ref)) != ref:
        return pos, ref, alt
    deletion = len(ref) > 1
    moved = ref[1:] if deletion else alt[1:]  # the deleted or inserted bases
    for _ in range(MAX_LEFT_SHIFT):
        after = pos + len(ref)  # 1-based: the first base right of the event
        following = reference.fetch(chrom, after - 1, after)
        if following != moved[0]:
            break  # also when the reference runs out ("")
        anchor, moved, pos = moved[0], moved[1:] + following, pos + 1
        ref, alt = (anchor + moved, anchor) if deletion else (anchor, anchor + moved)
    return pos, ref, alt


# --- liftover ---------------------------------------------------------------------------------

_CHAINS: dict[tuple[Build, Build], str] = {
    ("GRCh37", "GRCh38"): "hg19ToHg38.over.chain.gz",
    ("GRCh38", "GRCh37"): "hg38ToHg19.over.chain.gz",
}
_lifter_lock = threading.Lock()
_COMPLEMENT = str.maketrans("ACGTN", "TGCAN")


@functools.cache
def _lifter(source: Build, target: Build) -> Any:
    # Parsing a chain file takes seconds: load once per process, on first use, under a lock so
    # that two threads do not both pay for it.
    from pyliftover import LiftOver

    with _lifter_lock:
        chain = resources.files("services.genomics") / "data" / _CHAINS[(source, target)]
        with resources.as_file(chain) as path:
            return LiftOver(str(path))


def lift_position(
    chrom: str, pos: int, source: Build, target: Build
) -> tuple[str, int, str] | None:
    """Map one base (UCSC-style chrom, 1-based) to the other build: (chrom, pos, strand).

    None when the base is unmapped or maps to more than one place.
    """
    if source == target:
        return chrom, pos, "+"
    hits = _lifter(source, target).convert_coordinate(chrom, pos - 1)
    if not hits or len(hits) != 1:
        return None
    new_chrom, new_pos0, strand = hits[0][0], hits[0][1], hits[0][2]
    return str(new_chrom), int(new_pos0) + 1, str(strand)


def lift_allele(
    chrom: str,
    pos: int,
    ref: str,
    alt: str,
    source: Build,
    target: Build,
    reference: ReferenceSequence | None = None,
) -> tuple[str, int, str, str] | None:
    """Carry a trimmed allele to the other build, or None when that cannot be done exactly.

    Both ends of REF must map to the same chromosome and strand, the same distance apart (no
    chain gap inside the allele). On the minus strand REF/ALT are reverse-complemented and the
    position is that of REF's last base, now its left end. An indel there has its anchor base
    on the wrong side: it is re-anchored on the base to its left in the target, one base the
    record does not carry, so it needs `reference` (of either build; see _lift_minus_indel);
    without one it is not lifted.
    """
    if source == target:
        return chrom, pos, ref, alt
    span = _lift_span(chrom, pos, pos + len(ref) - 1, source, target)
    if span is None:
        return None
    new_chrom, left, strand = span
    if strand == "+":
        return new_chrom, left, ref, alt
    if len(ref) == len(alt):
        return new_chrom, left, _revcomp(ref), _revcomp(alt)
    return _lift_minus_indel(chrom, pos, ref, alt, source, target, reference)


def _lift_span(
    chrom: str, start: int, end: int, source: Build, target: Build
) -> tuple[str, int, str] | None:
    """(chrom, leftmost 1-based position, strand) of bases start..end on the other build, if
    they map to one chromosome and strand without a gap."""
    first = lift_position(chrom, start, source, target)
    last = lift_position(chrom, end, source, target)
    if first is None or last is None or first[0] != last[0] or first[2] != last[2]:
        return None
    if abs(last[1] - first[1]) != end - start:
        return None
    return first[0], min(first[1], last[1]), first[2]


def _lift_minus_indel(
    chrom: str,
    pos: int,
    ref: str,
    alt: str,
    source: Build,
    target: Build,
    reference: ReferenceSequence | None,
) -> tuple[str, int, str, str] | None:
    """Lift an anchored indel (ref[0] == alt[0]) through a minus-strand chain.

    With the target's reference: reverse-complement, drop the anchor (now on the right), take
    the target base left of the event as the new anchor, then left-align there. With the
    source's reference: shift the event to its rightmost place in the source (the leftmost in
    the target), write it anchored on the base to its right, and reverse-complement; the
    same key either way, and the one a sample called on the target build gets.
    """
    if reference is None or ref[:1] != alt[:1] or min(len(ref), len(alt)) != 1:
        return None
    if reference.build == target:
        span = _lift_span(chrom, pos, pos + len(ref) - 1, source, target)
        if span is None:
            return None
        new_chrom, left, _ = span
        anchor = reference.fetch(new_chrom, left - 2, left - 1)
        new_ref = anchor + _revcomp(ref)[:-1]
        new_alt = anchor + _revcomp(alt)[:-1]
        if len(anchor) != 1 or reference.fetch(new_chrom, left - 2, left - 2 + len(new_ref)) != (
            new_ref
        ):
            return None  # the target reference disagrees: a wrong FASTA never invents a key
        return new_chrom, *left_align(reference, new_chrom, left - 1, new_ref, new_alt)
    if reference.build == source:
        if reference.fetch(chrom, pos - 1, pos - 1 + len(ref)) != ref:
            return None
        pos, ref, alt = right_align(reference, chrom, pos, ref, alt)
        after_pos = pos + len(ref)  # the base right of the event: the new anchor
        after = reference.fetch(chrom, after_pos - 1, after_pos)
        span = _lift_span(chrom, pos + 1, after_pos, source, target)
        if len(after) != 1 or span is None or span[2] != "-":
            return None
        return span[0], span[1], _revcomp(ref[1:] + after), _revcomp(alt[1:] + after)
    return None


def _revcomp(seq: str) -> str:
    return seq.translate(_COMPLEMENT)[::-1]


def grch38_locus(
    chrom: str,
    pos: int,
    ref: str,
    alt: str,
    build: Build,
    reference: ReferenceSequence | None = None,
) -> Locus | None:
    """The build-independent key of an allele on `build`, or None when it has none.

    Accepts any chromosome spelling ("3", "chr3", "NC_000003.12") and untrimmed alleles; it
    does not left-align (that needs the reference: see vcf.read_vcf). `reference` (either
    build) lets an indel be lifted through a minus-strand chain (lift_allele).
    """
    pos, ref, alt = trim_alleles(pos, ref.upper(), alt.upper())
    lifted = lift_allele(canonical_chrom(chrom), pos, ref, alt, build, "GRCh38", reference)
    if lifted is None:
        return None
    try:
        return Locus(*lifted)
    except ValueError:
        return None  # e.g. an alt contig the chain maps to a non-UCSC name
