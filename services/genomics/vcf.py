"""Read one sample's variants from a VCF, VCF.gz (BGZF or plain gzip) or BCF.

The only module that touches pysam. Records are copied into frozen values here; nothing
pysam-owned escapes, and every failure, whatever htslib raised, becomes a VcfError naming the
file, the line when known, and the reason.

What is kept (BRIEF, "Samples"): every allele in the monitored gene spans whatever its FILTER,
every allele at a tracked locus, and for tissue also every allele that passed the caller's
filters. Plasma and normal samples need only the gene spans and tracked loci, so a BGZF or BCF
input is indexed into a temporary directory and only those regions are fetched (the same work
as `bcftools view -T`); tissue, plain text and unsortable inputs are streamed record by record.
"""

from __future__ import annotations

import contextlib
import gzip
import re
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import pysam
from pysam.utils import SamtoolsError

from services.errors import VcfError
from services.genomics import annotate, dialects
from services.genomics.build import (
    MAX_LEFT_SHIFT,
    ReferenceSequence,
    canonical_chrom,
    contig_votes,
    grch38_locus,
    left_align,
    lift_position,
    resolve_build,
    trim_alleles,
)
from services.genomics.regions import GENE_REGIONS, IntervalSet, gene_at
from services.genomics.sniff import MAX_LINE_BYTES, MAX_RECORDS, MAX_SAMPLE_COLUMNS, UTF8_BOM
from services.genomics.types import Build, Locus, SampleType, ScanMode, VariantCall, VcfReadResult

# What htslib/pysam raise on bad input: OSError for I/O and truncation, ValueError for parse
# errors (UnicodeDecodeError is one), NotImplementedError for a non-seekable gzip stream, and
# KeyError/IndexError/TypeError/OverflowError from pysam's decoding of malformed fields.
_HTSLIB_ERRORS: tuple[type[Exception], ...] = (
    OSError, ValueError, RuntimeError, KeyError, IndexError, TypeError, OverflowError,
    EOFError, zlib.error,
)  # fmt: skip

# Building an index also runs bcftools in-process, which reports failure as SamtoolsError.
_INDEX_ERRORS: tuple[type[Exception], ...] = (*_HTSLIB_ERRORS, SamtoolsError)

MAX_DECOMPRESSED_BYTES = 16 * 1024**3  # plain-gzip inflation cap (CTDNA_MAX_DECOMPRESSED_BYTES)
_GENE_PADDING = 1_000  # bp around gene spans when fetching, so left-alignment can move in
_TRACK_WINDOW = 250  # bp around a tracked locus: unnormalised indels sit right of their key
_FIXED_COLUMNS = ["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO"]
_ALLELE = re.compile(r"[ACGTN]+")
_REF = re.compile(r"[ACGTNRYKMSWBDHV]+")
_NON_FINITE = re.compile(
    r"[+-]?(nan|inf|infinity)", re.I
)  # references carry IUPAC codes in a few places

_Kind = Literal["vcf", "bgzf_vcf", "bcf"]


def read_vcf(
    path: Path,
    *,
    display_name: str,
    sample_type: SampleType,
    genome_build: Build | None = None,
    tumor_sample: str | None = None,
    normal_sample: str | None = None,
    tracked: frozenset[Locus] = frozenset(),
    reference_fasta: Path | None = None,
    max_decompressed_bytes: int = MAX_DECOMPRESSED_BYTES,
    max_sample_columns: int = MAX_SAMPLE_COLUMNS,
    max_line_bytes: int = MAX_LINE_BYTES,
    max_records: int = MAX_RECORDS,
) -> VcfReadResult:
    """Read the variants of one sample that the service stores, all in memory.

    Multi-allelic records are split per ALT; '*' and symbolic ALTs are skipped and counted.
    Alleles are trimmed of their shared suffix then prefix and, with `reference_fasta`,
    left-aligned (Tan, Abecasis & Kang 2015). Each allele gets its GRCh38 key (UCSC chain
    liftover for GRCh37), read counts by the caller's dialect (dialects.COUNT_READERS), and
    gene / protein change / hotspot flag (annotate.annotate). The same allele twice in a file
    is stored once: the PASS, quantitative, deepest copy. For a large file whose calls need
    not all be held at once, use `open_vcf`.

    Raises VcfError (GenomeBuildError for build problems); nothing else on bad input.
    """
    with open_vcf(
        path,
        display_name=display_name,
        sample_type=sample_type,
        genome_build=genome_build,
        tumor_sample=tumor_sample,
        normal_sample=normal_sample,
        tracked=tracked,
        reference_fasta=reference_fasta,
        max_decompressed_bytes=max_decompressed_bytes,
        max_sample_columns=max_sample_columns,
        max_line_bytes=max_line_bytes,
        max_records=max_records,
    ) as stream:
        kept: dict[tuple[str, int, str, str], VariantCall] = {}
        for call in stream.calls():
            key = (call.chrom, call.pos, call.ref, call.alt)
            # An unsorted file can repeat an allele further apart than the stream's window.
            if key not in kept or _preference(call) > _preference(kept[key]):
                kept[key] = call
        return VcfReadResult(
            build=stream.build,
            build_source=stream.build_source,
            tumor_sample=stream.tumor_sample,
            normal_sample=stream.normal_sample,
            records_read=stream.records_read,
            alleles_skipped=stream.alleles_skipped,
            variants=tuple(kept.values()),
            scan=stream.scan,
        )


@contextlib.contextmanager
def open_vcf(
    path: Path,
    *,
    display_name: str,
    sample_type: SampleType,
    genome_build: Build | None = None,
    tumor_sample: str | None = None,
    normal_sample: str | None = None,
    tracked: frozenset[Locus] = frozenset(),
    reference_fasta: Path | None = None,
    max_decompressed_bytes: int = MAX_DECOMPRESSED_BYTES,
    max_sample_columns: int = MAX_SAMPLE_COLUMNS,
    max_line_bytes: int = MAX_LINE_BYTES,
    max_records: int = MAX_RECORDS,
) -> Iterator[VcfStream]:
    """The same read as `read_vcf`, as a stream: the header's decisions (build, sample
    columns) at once, then the calls one at a time, so memory does not grow with the file.

    The header, build and columns are checked on entry (VcfError there); a bad record raises
    VcfError from the `calls()` iterator when it is reached. The stream holds the same allele
    once within a window of positions (a sorted file repeats an allele only there); an
    unsorted file may yield the same allele again later, and the first copy should win.

    A file over the caps (sample columns, line length, records; sniff.MAX_*) is a VcfError:
    the upload refuses such files first, this refuses a BCF's records and files kept earlier.
    """
    limits = _Limits(max_decompressed_bytes, max_sample_columns, max_line_bytes, max_records)
    with _quiet_htslib(), tempfile.TemporaryDirectory(prefix="ctdna-vcf-") as tmp:
        workdir = Path(tmp)
        source = _sniff(path, display_name, workdir, limits)
        reference = _open_reference(reference_fasta, display_name)
        try:
            reader = _Reader(source, display_name, workdir, limits)
            yield reader.open(
                sample_type=sample_type,
                genome_build=genome_build,
                tumor_sample=tumor_sample,
                normal_sample=normal_sample,
                tracked=tracked,
                reference=reference,
            )
        finally:
            if reference is not None:
                reference.close()


# --- sniffing: what kind of file is this, and is its header sane? -----------------------------


@dataclass(frozen=True, slots=True)
class _Limits:
    decompressed_bytes: int
    sample_columns: int
    line_bytes: int
    records: int


@dataclass(frozen=True, slots=True)
class _Source:
    path: Path
    kind: _Kind
    header_lines: int | None  # text VCF: lines up to and including #CHROM


def _sniff(
    path: Path, display_name: str, workdir: Path, limits: _Limits, inflated: bool = False
) -> _Source:
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(18)
    except OSError as exc:
        raise VcfError(display_name, f"cannot open the file ({exc.strerror or exc})") from exc
    if size == 0:
        raise VcfError(display_name, "the file is empty (0 bytes)")
    if head[:2] == b"\x1f\x8b":
        if inflated:
            raise VcfError(display_name, "gzip inside gzip; compress the VCF once, with bgzip")
        # htslib cannot iterate plain gzip, nor read a VCF behind a UTF-8 byte-order mark
        # (Windows editors write one): both are inflated to plain text first.
        if not _is_bgzf(head) or _starts_with_bom(path, display_name):
            plain = workdir / "inflated.vcf"
            _inflate(path, plain, display_name, limits.decompressed_bytes)
            return _sniff(plain, display_name, workdir, limits, inflated=True)
        with _gzip_errors(display_name):
            with gzip.open(path, "rb") as stream:
                magic = stream.read(5)
                if magic[:3] == b"BCF":
                    return _bcf_source(path, magic, display_name)
            with gzip.open(path, "rb") as stream:
                return _Source(path, "bgzf_vcf", _check_text_header(stream, display_name, limits))
    if head[:3] == b"BCF":
        return _bcf_source(path, head, display_name)  # uncompressed BCF
    if head.startswith(UTF8_BOM) and not inflated:
        plain = workdir / "inflated.vcf"
        _inflate(path, plain, display_name, limits.decompressed_bytes)
        return _sniff(plain, display_name, workdir, limits, inflated=True)
    with path.open("rb") as stream:
        return _Source(path, "vcf", _check_text_header(stream, display_name, limits))


def _starts_with_bom(path: Path, display_name: str) -> bool:
    with _gzip_errors(display_name), gzip.open(path, "rb") as stream:
        return stream.read(len(UTF8_BOM)) == UTF8_BOM


def _is_bgzf(head: bytes) -> bool:
    # BGZF = gzip member with FEXTRA and a "BC" subfield (SAM/BAM spec section 4.1).
    return len(head) >= 14 and head[3] & 0x04 != 0 and head[12:14] == b"BC"


def _bcf_source(path: Path, magic: bytes, display_name: str) -> _Source:
    if magic[3:4] != b"\x02":
        raise VcfError(display_name, "unsupported BCF version (only BCF 2 is supported)")
    return _Source(path, "bcf", None)


@contextlib.contextmanager
def _gzip_errors(display_name: str) -> Iterator[None]:
    try:
        yield
    except EOFError as exc:
        raise VcfError(display_name, "the gzip stream is truncated") from exc
    except (OSError, zlib.error) as exc:
        raise VcfError(display_name, f"corrupt gzip data ({exc})") from exc


def _inflate(path: Path, target: Path, display_name: str, max_bytes: int) -> None:
    """Copy a (plain-gzip, BGZF or uncompressed) file to plain text without its UTF-8 BOM."""
    written = 0
    with path.open("rb") as probe:
        compressed = probe.read(2) == b"\x1f\x8b"
    with (
        _gzip_errors(display_name),
        gzip.open(path, "rb") if compressed else path.open("rb") as src,
        target.open("wb") as dst,
    ):
        first = True
        while chunk := src.read(1 << 20):
            if first and chunk.startswith(UTF8_BOM):
                chunk = chunk[len(UTF8_BOM) :]
            first = False
            written += len(chunk)
            if written > max_bytes:
                raise VcfError(
                    display_name,
                    f"the gzip content inflates beyond {max_bytes} bytes; refusing to read it",
                )
            dst.write(chunk)


class _LineSource(Protocol):
    def readline(self, size: int = -1, /) -> bytes: ...


def _check_text_header(stream: _LineSource, display_name: str, limits: _Limits) -> int:
    """Validate a text header line by line; return the number of header lines.

    htslib's own messages for these cases go to stderr and surface as "invalid file", so we
    look first and say which line is wrong.
    """
    first = stream.readline(4096).rstrip(b"\r\n")
    version = re.match(rb"##fileformat=VCFv(\d+)\.(\d+)", first)
    if version is None:
        if first.startswith(b"##fileformat="):
            shown = first[13:60].decode("ascii", "replace")
            raise VcfError(display_name, f"unsupported file format {shown!r}", line=1)
        raise VcfError(
            display_name, "not a VCF file (line 1 is not '##fileformat=VCFv4.x')", line=1
        )
    major, minor = int(version.group(1)), int(version.group(2))
    if major != 4:
        raise VcfError(
            display_name,
            f"unsupported VCF version {major}.{minor} (VCF 4.0 to 4.5 are supported)",
            line=1,
        )
    number = 1
    while True:
        raw = stream.readline(limits.line_bytes + 1)
        number += 1
        if not raw:
            raise VcfError(display_name, "the header ends without a #CHROM line", line=number)
        if len(raw.rstrip(b"\r\n")) > limits.line_bytes:
            raise VcfError(
                display_name,
                f"line {number} is longer than {limits.line_bytes:,} bytes (CTDNA_MAX_LINE_BYTES)",
                line=number,
            )
        line = raw.rstrip(b"\r\n")
        if line.startswith(b"##"):
            continue
        if not line.startswith(b"#"):
            raise VcfError(display_name, "a record comes before the #CHROM line", line=number)
        _check_chrom_line(
            line.decode("utf-8", "replace"), display_name, number, limits.sample_columns
        )
        return number


def _check_chrom_line(line: str, display_name: str, number: int, max_samples: int) -> None:
    # Counted before the line is split: a million columns are refused without a million
    # strings.
    _check_sample_count(line.count("\t") + 1 - 9, display_name, max_samples, number)
    columns = line.split("\t")
    if columns[:8] != _FIXED_COLUMNS:
        if line.split()[:8] == _FIXED_COLUMNS:
            reason = "the #CHROM line must be tab-separated"
        else:
            reason = "the #CHROM line does not start with the eight fixed VCF columns"
        raise VcfError(display_name, reason, line=number)
    if len(columns) == 8:
        return
    if columns[8] != "FORMAT":
        raise VcfError(display_name, "the ninth #CHROM column must be FORMAT", line=number)
    samples = columns[9:]
    if any(not s.strip() for s in samples):
        raise VcfError(
            display_name,
            "empty sample name in the #CHROM line (a trailing tab or a double tab?)",
            line=number,
        )
    duplicated = sorted(name for name, n in Counter(samples).items() if n > 1)
    if duplicated:
        raise VcfError(display_name, f"duplicate sample names {duplicated}", line=number)


def _check_sample_count(samples: int, display_name: str, cap: int, line: int | None) -> None:
    if samples > cap:
        raise VcfError(
            display_name,
            f"the #CHROM line names {samples:,} sample columns; at most {cap:,} are accepted "
            "(CTDNA_MAX_SAMPLE_COLUMNS): send the sample's own VCF (bcftools view -s SAMPLE)",
            line=line,
        )


@contextlib.contextmanager
def _quiet_htslib() -> Iterator[None]:
    # htslib writes warnings to stderr (missing contigs, Number=R mismatches); we report
    # problems ourselves, so silence it for the duration of a read.
    previous = pysam.set_verbosity(0)
    try:
        yield
    finally:
        pysam.set_verbosity(previous)


# --- reference FASTA --------------------------------------------------------------------------


class _FastaReference:
    """pysam.FastaFile behind build.ReferenceSequence, with UCSC-style chromosome names."""

    def __init__(self, fasta: pysam.FastaFile) -> None:
        self._fasta = fasta
        self._names = {canonical_chrom(n): n for n in fasta.references}
        builds = {v.build for v in contig_votes(zip(fasta.references, fasta.lengths, strict=True))}
        self._build: Build | None = next(iter(builds)) if len(builds) == 1 else None

    @property
    def build(self) -> Build | None:
        return self._build

    def fetch(self, chrom: str, start: int, end: int) -> str:
        name = self._names.get(chrom)
        if name is None or start < 0:
            return ""
        try:
            return str(self._fasta.fetch(name, start, end)).upper()
        except _HTSLIB_ERRORS:
            return ""

    def close(self) -> None:
        self._fasta.close()


def _open_reference(path: Path | None, display_name: str) -> _FastaReference | None:
    if path is None:
        return None
    try:
        return _FastaReference(pysam.FastaFile(str(path)))
    except _HTSLIB_ERRORS as exc:
        raise VcfError(display_name, f"the reference FASTA {path} cannot be read ({exc})") from exc


# --- the reader -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Header:
    samples: tuple[str, ...]
    contigs: tuple[tuple[str, int | None], ...]
    reference_texts: tuple[str, ...]
    hints: dialects.SampleHints
    annotation_fields: tuple[annotate.AnnotationField, ...]
    site_counts: bool  # at most one sample column: INFO counts are the tumour's (dialects)


@dataclass(frozen=True, slots=True)
class _Record:
    """A record copied out of pysam: only what the service needs."""

    line: int | None
    chrom: str
    pos: int
    ref: str
    alts: tuple[str, ...]
    filters: tuple[str, ...]
    tumor: Mapping[str, object]
    normal: Mapping[str, object] | None
    annotations: Mapping[str, tuple[str, ...]]
    site: Mapping[str, object]  # INFO count fields (dialects.INFO_KEYS), when site_counts


@dataclass(frozen=True, slots=True)
class _Scope:
    """Which records can matter, decided from CHROM/POS/FILTER before anything is decoded."""

    intervals: IntervalSet  # UCSC chrom, sample build, 1-based inclusive
    keep_passed: bool


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the header decided: everything a record needs to become calls."""

    build: Build
    build_source: str
    tumor: str | None
    normal: str | None
    tracked: frozenset[Locus]
    scope: _Scope
    header: _Header
    reference: ReferenceSequence | None


class VcfStream:
    """One sample's variants being read (see `open_vcf`): the header's decisions as attributes,
    the calls from `calls()`, and `records_read` / `alleles_skipped` once it is exhausted."""

    def __init__(self, reader: _Reader, plan: _Plan) -> None:
        self._reader = reader
        self._plan = plan
        self._counter = _Counter()
        self._started = False
        self.build: Build = plan.build
        self.build_source = plan.build_source
        self.tumor_sample = plan.tumor
        self.normal_sample = plan.normal
        self.scan: ScanMode = "indexed" if reader.indexed(plan.scope) else "full"

    @property
    def records_read(self) -> int:
        """Records decoded so far; with scan == "indexed" only those in the regions."""
        return self._counter.records

    @property
    def alleles_skipped(self) -> int:
        """'*' and symbolic ALT alleles seen so far."""
        return self._counter.skipped

    @property
    def position(self) -> str:
        """Where the read is, for progress reports: "line N" of a text file read in full,
        else "record N" (a BCF, or regions fetched through an index)."""
        header_lines = self._reader.header_lines
        if self.scan == "full" and header_lines is not None:
            return f"line {header_lines + self._counter.records}"
        return f"record {self._counter.records}"

    def calls(self) -> Iterator[VariantCall]:
        """The kept alleles in file order, each once within a window of positions: a copy is
        held back until no later record of a sorted file can repeat it, and of two copies
        the PASS, quantitative, deepest one is yielded. One pass only."""
        if self._started:
            raise RuntimeError("VcfStream.calls() can be iterated once")
        self._started = True
        plan, reader, counter = self._plan, self._reader, self._counter
        # Trimming only moves an allele right of its record's POS; left-alignment moves it
        # left by at most MAX_LEFT_SHIFT.
        window = MAX_LEFT_SHIFT + 1 if plan.reference is not None else 0
        pending: dict[tuple[str, int, str, str], VariantCall] = {}
        records = reader.records(plan.scope, plan.header, plan.tumor, plan.normal, counter)
        for record in records:
            while pending:
                key = next(iter(pending))
                if key[0] == record.chrom and key[1] >= record.pos - window:
                    break
                yield pending.pop(key)
            for call in reader.calls(record, plan, counter):
                key = (call.chrom, call.pos, call.ref, call.alt)
                kept = pending.get(key)
                if kept is None or _preference(call) > _preference(kept):
                    pending[key] = call
        yield from pending.values()


class _Reader:
    def __init__(self, source: _Source, display_name: str, workdir: Path, limits: _Limits) -> None:
        self._source = source
        self._name = display_name
        self._workdir = workdir
        self._limits = limits
        self._index: Path | None = None
        self._canon: dict[str, str] = {}

    @property
    def header_lines(self) -> int | None:
        return self._source.header_lines

    # -- orchestration --

    def open(
        self,
        *,
        sample_type: SampleType,
        genome_build: Build | None,
        tumor_sample: str | None,
        normal_sample: str | None,
        tracked: frozenset[Locus],
        reference: ReferenceSequence | None,
    ) -> VcfStream:
        header = self._read_header()
        # A header-only file is valid (zero variants): nothing in it needs a build or a column.
        has_records = self._has_records()
        tumor, normal = dialects.resolve_samples(
            self._name,
            header.samples,
            header.hints,
            tumor_sample=tumor_sample,
            normal_sample=normal_sample,
            required=has_records,
        )
        # Region fetches pay off only when most of the file can be skipped.
        if sample_type != "tissue":
            self._build_index()
        build, build_source = resolve_build(
            self._name,
            given=genome_build,
            contigs=header.contigs,
            reference_texts=header.reference_texts,
            hotspot_build=self._hotspot_build,
            allow_undetermined=not has_records,
        )
        scope = _Scope(_interval_scope(build, tracked), keep_passed=sample_type == "tissue")
        return VcfStream(
            self,
            _Plan(build, build_source, tumor, normal, tracked, scope, header, reference),
        )

    # -- header --

    def _open(self) -> pysam.VariantFile:
        try:
            if self._index is not None:
                return pysam.VariantFile(str(self._source.path), index_filename=str(self._index))
            return pysam.VariantFile(str(self._source.path))
        except _HTSLIB_ERRORS as exc:
            raise VcfError(self._name, f"htslib cannot read the file ({exc})") from exc

    def _read_header(self) -> _Header:
        with self._open() as vcf:
            try:
                header = _copy_header(vcf.header)
            except _HTSLIB_ERRORS as exc:
                raise VcfError(self._name, f"invalid header ({exc})") from exc
        # a text header was counted before htslib read it; a BCF's is counted here
        _check_sample_count(len(header.samples), self._name, self._limits.sample_columns, None)
        return header

    def _build_index(self) -> None:
        """Index a BGZF VCF or a BCF into the work directory; on failure, stream instead."""
        target = self._workdir / ("input.csi" if self._source.kind == "bcf" else "input.tbi")
        try:
            if self._source.kind == "bgzf_vcf":
                pysam.tabix_index(
                    str(self._source.path), preset="vcf", index=str(target), force=True
                )
            elif self._source.kind == "bcf":
                from pysam import bcftools

                bcftools.index("--csi", "-o", str(target), str(self._source.path))
            else:
                return
        except _INDEX_ERRORS:
            return  # unsorted or damaged: the streaming read reports any real damage
        if target.exists():
            self._index = target

    def indexed(self, scope: _Scope) -> bool:
        """Whether records come from region fetches (an index was built) or a full scan."""
        return self._index is not None and not scope.keep_passed

    def _has_records(self) -> bool:
        with self._open() as vcf:
            try:
                return next(iter(vcf), None) is not None
            except _HTSLIB_ERRORS:
                return True  # a damaged first record is still a record; reported later

    def _hotspot_build(self) -> Build | None:
        """Build whose hotspot alleles this file carries: a last resort without a header."""
        spots = IntervalSet(
            (chrom, pos, pos)
            for build in ("GRCh37", "GRCh38")
            for chrom, pos in annotate.hotspot_positions(build)
        )
        scope = _Scope(spots, keep_passed=False)
        header = _Header((), (), (), dialects.SampleHints(), (), False)
        alleles: list[tuple[str, int, str, str]] = []
        for record in self.records(scope, header, None, None, _Counter()):
            record_ref = record.ref.upper()
            for alt in (a.upper() for a in record.alts):
                if _ALLELE.fullmatch(alt) and _REF.fullmatch(record_ref):
                    pos, ref, trimmed = trim_alleles(record.pos, record_ref, alt)
                    alleles.append((self._canonical(record.chrom), pos, ref, trimmed))
        return annotate.hotspot_build(alleles)

    # -- records --

    def _canonical(self, chrom: str) -> str:
        canon = self._canon.get(chrom)
        if canon is None:
            canon = self._canon[chrom] = canonical_chrom(chrom)
        return canon

    def records(
        self,
        scope: _Scope,
        header: _Header,
        tumor: str | None,
        normal: str | None,
        counter: _Counter,
    ) -> Iterator[_Record]:
        """Copy every record that the scope may need, mapping htslib errors to VcfError."""
        with self._open() as vcf:
            indexed = self.indexed(scope)
            stream = self._fetch(vcf, scope) if indexed else iter(vcf)
            header_lines = self._source.header_lines
            seen: set[tuple[str, int, str, tuple[str, ...] | None]] = set()
            while True:
                try:
                    rec = next(stream)
                except StopIteration:
                    return
                except _HTSLIB_ERRORS as exc:
                    raise self._record_error(exc, counter.records + 1, indexed) from exc
                counter.records += 1
                if counter.records > self._limits.records:
                    raise VcfError(
                        self._name,
                        f"the file has more than {self._limits.records:,} records "
                        "(CTDNA_MAX_RECORDS)",
                    )
                line = None if indexed or header_lines is None else header_lines + counter.records
                try:
                    chrom, pos = rec.chrom, rec.pos
                    wanted = scope.intervals.overlaps(self._canonical(chrom), pos, rec.stop) or (
                        scope.keep_passed and _passed(rec.filter.keys())
                    )
                    if not wanted:
                        continue
                    if indexed:
                        # A long record spanning two fetched regions comes back twice.
                        identity = (chrom, pos, rec.ref or "", rec.alts)
                        if identity in seen:
                            counter.records -= 1
                            continue
                        seen.add(identity)
                    record = _copy_record(rec, line, header, tumor, normal)
                except _HTSLIB_ERRORS as exc:
                    raise self._record_error(exc, counter.records, indexed) from exc
                yield record

    def _fetch(self, vcf: pysam.VariantFile, scope: _Scope) -> Iterator[pysam.VariantRecord]:
        index = vcf.index
        if index is None:
            return
        # Contigs in the index's order (the file's), so results come out in file order.
        for name in (str(n) for n in index):
            if name not in vcf.header.contigs:
                # A file without ##contig lines: htslib refuses to fetch a contig its header
                # does not declare, even when the index has it.
                vcf.header.contigs.add(name)
            for start, end in scope.intervals.spans_on(self._canonical(name)):
                # fetch() is 0-based half-open; spans are 1-based inclusive.
                yield from vcf.fetch(name, start - 1, end)

    def _record_error(self, exc: Exception, number: int, indexed: bool) -> VcfError:
        header_lines = self._source.header_lines
        if indexed or header_lines is None:
            return VcfError(self._name, f"cannot parse a record (number {number} read): {exc}")
        line = header_lines + number
        return VcfError(self._name, _diagnose(self._source.path, line, exc), line=line)

    # -- alleles --

    def calls(self, record: _Record, plan: _Plan, counter: _Counter) -> Iterator[VariantCall]:
        """The kept alleles of one record, with counts, key and annotation."""
        build, tracked, scope = plan.build, plan.tracked, plan.scope
        header, reference = plan.header, plan.reference
        record_ref = record.ref.upper()
        canon = self._canonical(record.chrom)
        passed = _passed(record.filters)
        for alt_index, raw_alt in enumerate(record.alts, start=1):
            alt = raw_alt.upper()
            if not _ALLELE.fullmatch(alt) or not _REF.fullmatch(record_ref) or alt == record_ref:
                counter.skipped += 1  # '*', <DEL>, <NON_REF>, breakends, missing
                continue
            pos, ref, alt = trim_alleles(record.pos, record_ref, alt)
            if reference is not None and reference.build in (None, build):
                pos, ref, alt = left_align(reference, canon, pos, ref, alt)
            locus = _locus(canon, pos, ref, alt, build, reference)
            in_gene = gene_at(build, canon, pos) is not None
            is_tracked = locus is not None and locus in tracked
            if not (in_gene or is_tracked or (scope.keep_passed and passed)):
                continue
            allele = dialects.AlleleContext(record.ref, record.alts, alt_index)
            counts = dialects.sample_counts(record.tumor, record.site, allele)
            if record.normal is not None:
                normal_counts = dialects.read_counts(record.normal, allele)
            else:
                normal_counts = dialects.read_counts(
                    record.tumor, allele, dialects.CONTROL_READERS, partial=False
                )
            from_file = annotate.file_annotation(
                header.annotation_fields, record.annotations, record.ref, record.alts, alt_index
            )
            annotation = annotate.annotate(locus, build, canon, pos, from_file)
            yield VariantCall(
                chrom=record.chrom,
                pos=pos,
                ref=ref,
                alt=alt,
                build=build,
                locus=locus,
                filter=_filter_text(record.filters),
                passed=passed,
                alt_reads=counts.alt_reads,
                depth=counts.depth,
                vaf=counts.vaf,
                quantitative=counts.quantitative,
                normal_alt_reads=normal_counts.alt_reads,
                normal_depth=normal_counts.depth,
                gene=annotation.gene,
                protein_change=annotation.protein_change,
                hotspot=annotation.hotspot,
                in_monitored_gene=in_gene,
                tracked=is_tracked,
                counts_source=counts.source,
                annotation_source=annotation.source,
                line=record.line,
            )


@dataclass(slots=True)
class _Counter:
    records: int = 0
    skipped: int = 0


def _diagnose(path: Path, line: int, exc: Exception) -> str:
    """Say what is wrong with text line `line`; htslib's own words ("truncated file") for a
    non-numeric POS, say, send people looking in the wrong place."""
    text = b""
    with contextlib.suppress(OSError, EOFError, zlib.error):
        with path.open("rb") as probe:
            compressed = probe.read(2) == b"\x1f\x8b"
        with gzip.open(path, "rb") if compressed else path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if number == line:
                    text = raw.rstrip(b"\r\n")
                    break
    columns = text.decode("utf-8", "replace").split("\t")
    if text and len(columns) < 8:
        return f"the record has {len(columns)} tab-separated columns; VCF needs at least 8"
    if text and not columns[1].isdigit():
        return f"POS is not a positive integer: {columns[1][:40]!r}"
    # htslib reads NaN/Inf in Float fields but not in Integer ones (AD, DP, ...), and says only
    # "unable to parse next record".
    non_finite = next(
        (t for t in re.split(r"[\t:,;=]", "\t".join(columns[7:])) if _NON_FINITE.fullmatch(t)), None
    )
    if non_finite is not None:
        return (
            f"cannot parse the record: it has a non-finite number ({non_finite[:12]!r}); "
            "counts and depths (AD, DP, ...) must be whole numbers"
        )
    return f"cannot parse the record ({exc})"


def _copy_header(header: pysam.VariantHeader) -> _Header:
    contigs = tuple((str(name), _opt_int(c.length)) for name, c in header.contigs.items())
    reference_texts: list[str] = []
    hints: dict[str, str] = {}
    sample_lines: dict[str, str] = {}
    for record in header.records:
        key = str(record.key)
        if record.type == "GENERIC" and key in ("reference", "assembly"):
            reference_texts.append(str(record.value))
        elif record.type == "GENERIC" and key in ("tumor_sample", "normal_sample", "source"):
            hints.setdefault(key, str(record.value).strip())
        elif record.type == "CONTIG" and record.get("assembly"):
            reference_texts.append(str(record.get("assembly")))
        elif key == "SAMPLE" and record.get("ID"):
            rest = " ".join(f"{k}={v}" for k, v in record.items() if k != "ID")
            sample_lines[str(record.get("ID"))] = rest.lower()
    string_info = {
        str(k): str(v.description or "") for k, v in header.info.items() if v.type == "String"
    }
    return _Header(
        samples=tuple(str(s) for s in header.samples),
        contigs=contigs,
        reference_texts=tuple(reference_texts),
        hints=dialects.SampleHints(
            tumor_sample=hints.get("tumor_sample"),
            normal_sample=hints.get("normal_sample"),
            source=hints.get("source"),
            sample_lines=sample_lines,
        ),
        annotation_fields=annotate.annotation_fields(string_info),
        site_counts=len(header.samples) <= 1,
    )


def _copy_record(
    rec: pysam.VariantRecord,
    line: int | None,
    header: _Header,
    tumor: str | None,
    normal: str | None,
) -> _Record:
    # FORMAT keys a record uses without declaring them are read too: htslib types them String.
    present = dialects.FORMAT_KEYS.intersection(rec.format.keys())
    tumor_fields: dict[str, object] = {}
    normal_fields: dict[str, object] | None = None
    if tumor is not None and present:
        sample = rec.samples[tumor]
        tumor_fields = {k: sample[k] for k in present}
    if normal is not None:
        sample = rec.samples[normal]
        normal_fields = {k: sample[k] for k in present}
    annotations: dict[str, tuple[str, ...]] = {}
    for field in header.annotation_fields:
        for key in field.info_keys:
            value = rec.info.get(key)
            if value is not None:
                annotations[key] = _strings(value)
    site: dict[str, object] = {}
    if header.site_counts:
        for key in dialects.INFO_KEYS.intersection(rec.info.keys()):
            # Optional evidence: a badly declared INFO count is skipped, not fatal.
            with contextlib.suppress(*_HTSLIB_ERRORS):
                site[key] = rec.info[key]
    return _Record(
        line=line,
        chrom=str(rec.chrom),
        pos=int(rec.pos),
        ref=str(rec.ref or ""),
        alts=tuple(str(a) for a in rec.alts or ()),
        filters=tuple(str(f) for f in rec.filter),
        tumor=tumor_fields,
        normal=normal_fields,
        annotations=annotations,
        site=site,
    )


def _strings(value: object) -> tuple[str, ...]:
    if isinstance(value, tuple):
        return tuple(str(v) for v in value if v is not None)
    return tuple(str(value).split(","))


def _opt_int(value: object) -> int | None:
    return value if isinstance(value, int) else None


def _passed(filters: Sequence[object]) -> bool:
    return len(filters) == 0 or (len(filters) == 1 and filters[0] == "PASS")


def _filter_text(filters: tuple[str, ...]) -> str:
    return ";".join(filters) if filters else "."


def _locus(
    canon: str, pos: int, ref: str, alt: str, build: Build, reference: ReferenceSequence | None
) -> Locus | None:
    locus = grch38_locus(canon, pos, ref, alt, build, reference)
    if locus is None or reference is None or build == "GRCh38" or reference.build != "GRCh38":
        return locus
    # A GRCh38 FASTA with a GRCh37 sample: normalise the key on the build it is written in.
    lpos, lref, lalt = left_align(reference, locus.chrom, locus.pos, locus.ref, locus.alt)
    try:
        return Locus(locus.chrom, lpos, lref, lalt)
    except ValueError:
        return locus  # the reference carries an IUPAC code in the shifted context


def _interval_scope(build: Build, tracked: Iterable[Locus]) -> IntervalSet:
    spans = [(r.chrom, r.start - _GENE_PADDING, r.end + _GENE_PADDING) for r in GENE_REGIONS[build]]
    for locus in tracked:
        lifted = lift_position(locus.chrom, locus.pos, "GRCh38", build)
        if lifted is not None:
            chrom, pos, _ = lifted
            spans.append((chrom, pos - _TRACK_WINDOW, pos + len(locus.ref) + _TRACK_WINDOW))
    return IntervalSet(spans)


def _preference(call: VariantCall) -> tuple[bool, bool, int]:
    return call.passed, call.quantitative, call.depth or 0
