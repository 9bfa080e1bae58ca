"""Tell, from the bytes of an upload as they stream in, whether it is a VCF or a BCF at all,
and how far its gzip content inflates; and whether an alignment upload is a BAM/CRAM with a
fitting index.

The API runs this while it copies an upload to disk, so that a PDF, a BAM, a FASTA or a web
page is refused at once with a clear answer (no sample, no job, no file kept), and a gzip bomb
is refused before any worker inflates it. What it accepts may still be a bad VCF: the reader
(vcf.py) judges the records. Pure stdlib (zlib): nothing here decodes a record.
"""

from __future__ import annotations

import re
import zlib
from typing import NoReturn

from services.errors import InvalidInput, PayloadTooLarge, VcfError
from services.genomics.build import contig_votes

UTF8_BOM = b"\xef\xbb\xbf"
_GZIP_MAGIC = b"\x1f\x8b"
_INFLATE_CHUNK = 1 << 20  # inflate at most this much per call: memory stays flat on a bomb
_HEAD = 256  # bytes of (inflated) content needed to judge the first line
_VERSION = re.compile(rb"##fileformat=VCFv(\d+)\.(\d+)")
_FIXED_COLUMNS = 8  # #CHROM ... INFO; then FORMAT and one column per sample

# What one file may ask of the service (CTDNA_MAX_SAMPLE_COLUMNS, CTDNA_MAX_LINE_BYTES,
# CTDNA_MAX_RECORDS). A plasma VCF has one to three sample columns and a panel a few hundred
# records; a whole-genome tissue VCF a few million. Past these a file is refused at upload,
# in flat memory, and the reader refuses it again (a BCF's records, a file stored earlier).
MAX_SAMPLE_COLUMNS = 1_000
MAX_LINE_BYTES = 16 * 1024**2
MAX_RECORDS = 50_000_000

# What the first bytes of common wrong uploads are, so the answer can say what was sent.
_LOOKS_LIKE: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "a PDF document"),
    (b"BAM\x01", "a BAM file (aligned reads, not variant calls)"),
    (b"CRAM", "a CRAM file (aligned reads, not variant calls)"),
    (b"PK\x03\x04", "a ZIP archive (send the VCF itself, or compress it with bgzip)"),
    (b"BZh", "a bzip2 archive (compress the VCF with bgzip instead)"),
    (b"\xfd7zXZ\x00", "an xz archive (compress the VCF with bgzip instead)"),
    (b"\x28\xb5\x2f\xfd", "a zstd archive (compress the VCF with bgzip instead)"),
    (b"\x89HDF", "an HDF5 file"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"{\\rtf", "an RTF document"),
    (b"\xd0\xcf\x11\xe0", "a Microsoft Office document"),
    (b"##gff-version", "a GFF file"),
    (b"##maf", "a MAF alignment"),
    (b"#version", "a MAF file"),
    (b"@HD\t", "a SAM file (aligned reads, not variant calls)"),
    (b">", "a FASTA file"),
    (b"@", "a FASTQ file"),
    (b"<", "an HTML or XML document"),
    (b"{", "a JSON document"),
)


class InflatesTooFar(PayloadTooLarge):
    """Compressed content that inflates past the configured cap (a zip bomb, or just huge)."""


class TooLarge(VcfError, PayloadTooLarge):
    """A line longer, or more records, than the caps allow (413, naming the file and line)."""


class UploadCheck:
    """Feed the upload's bytes in order; raises VcfError (not a VCF/BCF, corrupt or truncated
    gzip) or InflatesTooFar as soon as the bytes seen so far decide it.

    Plain text must start with `##fileformat=VCFv4.x` (after a UTF-8 BOM, if any). A gzip
    stream, BGZF or not, is inflated as it arrives, member after member, counting the bytes
    and keeping none but the first few, which must be a VCF's first line or BCF 2's magic.
    """

    def __init__(
        self,
        display_name: str,
        *,
        max_decompressed_bytes: int,
        max_sample_columns: int = MAX_SAMPLE_COLUMNS,
        max_line_bytes: int = MAX_LINE_BYTES,
        max_records: int = MAX_RECORDS,
    ) -> None:
        self._name = display_name
        self._max = max_decompressed_bytes
        self._limits = (max_sample_columns, max_line_bytes, max_records)
        self._scan: _TextScan | _BcfScan | None = None  # chosen once the content is judged
        self._unscanned = b""  # content seen before it was judged
        self._raw_head = b""  # the upload's first bytes, until the kind is known
        self._kind: str | None = None  # "gzip" | "plain"
        self._content_head = b""  # the (inflated) content's first bytes, until judged
        self._judged = False
        self._inflater: zlib._Decompress | None = None
        self._pending = b""  # bytes after a gzip member, before the next one's magic
        self._inflated = 0
        self._trailing = False  # non-gzip bytes after the last member: no reader gets there

    @property
    def inflated_bytes(self) -> int:
        """Bytes the gzip content inflated to so far (0 for an uncompressed upload)."""
        return self._inflated

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self._kind is None:
            self._raw_head += chunk
            if len(self._raw_head) < 2:
                return
            self._kind = "gzip" if self._raw_head[:2] == _GZIP_MAGIC else "plain"
            chunk, self._raw_head = self._raw_head, b""
        if self._kind == "plain":
            self._content(chunk)
        else:
            self._inflate(chunk)

    def finish(self) -> None:
        """The upload is complete: judge what is left undecided."""
        if self._kind is None:
            if not self._raw_head:
                raise VcfError(self._name, "the file is empty (0 bytes)")
            self._kind = "plain"
            self._content(self._raw_head)
        if self._kind == "gzip" and not self._trailing:
            member_open = self._inflater is not None and not self._inflater.eof
            if member_open or self._pending == _GZIP_MAGIC[:1]:
                raise VcfError(self._name, "the gzip stream is truncated (the upload is cut short)")
        if not self._judged:
            self._judge(final=True)
        if self._scan is not None:
            self._scan.finish()

    # -- gzip --

    def _inflate(self, chunk: bytes) -> None:
        data = self._pending + chunk
        self._pending = b""
        while data and not self._trailing:
            if self._inflater is None or self._inflater.eof:
                if len(data) < 2:
                    self._pending = data
                    return
                if data[:2] != _GZIP_MAGIC:
                    # Padding or junk after the last member; htslib and Python's gzip stop
                    # (or fail) there, so no reader inflates anything past it.
                    self._trailing = True
                    return
                self._inflater = zlib.decompressobj(wbits=31)
            inflater = self._inflater
            try:
                self._count(inflater.decompress(data, _INFLATE_CHUNK))
                while inflater.unconsumed_tail and not inflater.eof:
                    self._count(inflater.decompress(inflater.unconsumed_tail, _INFLATE_CHUNK))
            except zlib.error as exc:
                raise VcfError(self._name, f"corrupt gzip data ({exc})") from exc
            data = inflater.unused_data if inflater.eof else b""

    def _count(self, out: bytes) -> None:
        self._inflated += len(out)
        if self._inflated > self._max:
            raise InflatesTooFar(
                f"{self._name}: the compressed content inflates beyond {self._max:,} bytes "
                "(the CTDNA_MAX_DECOMPRESSED_BYTES cap); refusing it"
            )
        self._content(out)

    # -- content --

    def _content(self, data: bytes) -> None:
        """Judge the first bytes of the (inflated) content, then scan all of it."""
        if self._scan is not None:
            self._scan.feed(data)
            return
        self._unscanned += data
        self._look(data)
        if self._judged:
            head = self._unscanned
            self._unscanned = b""
            columns, line_bytes, records = self._limits
            if head.startswith(b"BCF"):
                self._scan = _BcfScan(self._name, columns)
            else:
                self._scan = _TextScan(self._name, columns, line_bytes, records)
            self._scan.feed(head)

    def _look(self, data: bytes) -> None:
        if self._judged:
            return
        self._content_head += data[: _HEAD - len(self._content_head)]
        if len(self._content_head) >= _HEAD or b"\n" in self._content_head:
            self._judge(final=False)

    def _judge(self, *, final: bool) -> None:
        head = self._content_head
        if head.startswith(UTF8_BOM):
            head = head[len(UTF8_BOM) :]
        compressed = self._kind == "gzip"
        if head[:3] == b"BCF":
            if head[3:4] != b"\x02":
                raise VcfError(self._name, "unsupported BCF version (only BCF 2 is supported)")
        elif compressed and head[:2] == _GZIP_MAGIC:
            raise VcfError(self._name, "gzip inside gzip; compress the VCF once, with bgzip")
        elif not head:
            if final:
                what = "the gzip content is empty" if compressed else "the file is empty"
                raise VcfError(self._name, what)
            return
        else:
            self._judge_text(head)
        self._judged = True
        self._content_head = b""

    def _judge_text(self, head: bytes) -> None:
        first = head.split(b"\n", 1)[0].rstrip(b"\r")
        version = _VERSION.match(first)
        if version is not None:
            major, minor = int(version.group(1)), int(version.group(2))
            if major != 4:
                raise VcfError(
                    self._name,
                    f"unsupported VCF version {major}.{minor} (VCF 4.0 to 4.5 are supported)",
                    line=1,
                )
            return
        if first.startswith(b"##fileformat="):
            shown = first[13:60].decode("ascii", "replace")
            raise VcfError(self._name, f"unsupported file format {shown!r}", line=1)
        what = next((text for magic, text in _LOOKS_LIKE if head.startswith(magic)), None)
        if what is None:
            what = "text" if _is_text(head) else "binary data"
        inside = ", gzip-compressed" if self._kind == "gzip" else ""
        raise VcfError(
            self._name,
            f"not a VCF or BCF file: it looks like {what}{inside}, and a VCF starts with "
            "'##fileformat=VCFv4.x'. Send a VCF, a bgzip-compressed VCF.gz or a BCF",
        )


class _TextScan:
    """The lines of a text VCF as they stream in: the sample columns of its #CHROM line, the
    length of every line and the number of records, each against its cap. Work per chunk, not
    per line, once the header is behind (a header is a few thousand lines at most)."""

    def __init__(
        self,
        name: str,
        max_columns: int,
        max_line: int,
        max_records: int,
        *,
        header_only: bool = False,
    ) -> None:
        self._name = name
        self._max_columns = max_columns
        self._max_line = max_line
        self._max_records = max_records
        self._header_only = header_only
        self._line = 1  # number of the line being read
        self._length = 0  # bytes of it seen so far
        self._start = b""  # its first bytes, until they tell a header line from the rest
        self._tabs = 0  # tabs of the #CHROM line so far
        self._in_header = True
        self._records = 0
        self.done = False  # header_only: the #CHROM line has been read

    def feed(self, data: bytes) -> None:
        at = 0
        while at < len(data) and self._in_header and not self.done:
            at = self._header_piece(data, at)
        if at < len(data) and not self._in_header and not self._header_only:
            self._records_piece(data, at)

    def finish(self) -> None:
        if self._in_header:
            if self._start.startswith(b"#") and not self._start.startswith(b"##"):
                self._chrom_line_done()
        elif self._length and not self._header_only:
            self._count_records(1)  # a last record without its newline

    def _header_piece(self, data: bytes, at: int) -> int:
        end = data.find(b"\n", at)
        stop = len(data) if end == -1 else end
        if len(self._start) < 2:
            self._start += data[at : min(stop, at + 2 - len(self._start))]
        if self._start[:1] not in (b"", b"#"):
            # A record before any #CHROM line (the reader says so): lines from here on are
            # records.
            self._in_header = False
            return at
        chrom = self._start.startswith(b"#") and not self._start.startswith(b"##")
        if chrom:
            self._tabs += data.count(b"\t", at, stop)
        self._length += stop - at
        self._check_length()
        if end == -1:
            return len(data)
        if chrom:
            self._chrom_line_done()
        self._line += 1
        self._length = 0
        self._start = b""
        return end + 1

    def _chrom_line_done(self) -> None:
        samples = max(0, self._tabs + 1 - _FIXED_COLUMNS - 1)
        if samples > self._max_columns:
            raise VcfError(
                self._name,
                f"the #CHROM line names {samples:,} sample columns; at most "
                f"{self._max_columns:,} are accepted (CTDNA_MAX_SAMPLE_COLUMNS): send the "
                "sample's own VCF (bcftools view -s SAMPLE)",
                line=self._line if not self._header_only else None,
            )
        self._in_header = False
        self.done = self._header_only

    def _records_piece(self, data: bytes, at: int) -> None:
        first = data.find(b"\n", at)
        if first == -1:
            self._length += len(data) - at
            self._check_length()
            return
        self._length += first - at
        self._check_length()
        last = data.rfind(b"\n")
        lines = data.count(b"\n", at)
        if last - first > self._max_line:
            # a chunk larger than the cap can hide a long line between its first and last
            # newlines (the inflater and the upload copy chunks of 1 MiB; this is a guard)
            for offset, line in enumerate(data[first + 1 : last].split(b"\n"), start=1):
                if len(line) > self._max_line:
                    self._line += offset
                    self._length = len(line)
                    self._check_length()
        self._count_records(lines)
        self._line += lines
        self._length = len(data) - last - 1
        self._check_length()

    def _count_records(self, lines: int) -> None:
        self._records += lines
        if self._records > self._max_records:
            raise TooLarge(
                self._name,
                f"the file has more than {self._max_records:,} records (CTDNA_MAX_RECORDS)",
            )

    def _check_length(self) -> None:
        if self._length > self._max_line:
            raise TooLarge(
                self._name,
                f"line {self._line} is longer than {self._max_line:,} bytes (CTDNA_MAX_LINE_BYTES)",
                line=self._line,
            )


class _BcfScan:
    """A BCF's header text (after its magic and length) scanned for its sample columns; the
    binary records are the reader's to judge."""

    def __init__(self, name: str, max_columns: int) -> None:
        self._head = b""
        self._text: _TextScan = _TextScan(name, max_columns, MAX_BCF_HEADER, 0, header_only=True)
        self._left: int | None = None

    def feed(self, data: bytes) -> None:
        if self._left is None:
            self._head += data
            if len(self._head) < 9:
                return
            self._left = int.from_bytes(self._head[5:9], "little")
            data, self._head = self._head[9:], b""
        if self._left > 0 and not self._text.done:
            piece = data[: self._left]
            self._left -= len(piece)
            self._text.feed(piece)

    def finish(self) -> None:
        if not self._text.done:
            self._text.finish()


MAX_BCF_HEADER = 1 << 31  # l_text is a uint32; the decompression cap bounds it anyway


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # a character cut at the end of the probe
    return b"\x00" not in head


# -- alignments ------------------------------------------------------------------------------

_BGZF_EXTRA = b"BC\x02\x00"  # the BGZF block-size subfield of a gzip member's FEXTRA
_BLOCK_MAX = 1 << 16  # a BGZF block is at most 64 KiB compressed and inflated
ALIGNMENT_FORMATS = {"bam": ("bai", "csi"), "cram": ("crai",)}  # which index fits which file


class AlignmentCheck:
    """Feed an alignment upload (``role="alignment"``) or its index (``role="index"``); raises
    InvalidInput as soon as the first bytes show it is not one, and tells its ``kind`` after
    ``finish()``.

    An alignment is a BAM (BGZF whose first block inflates to ``BAM\\1``) or a CRAM (``CRAM``
    magic); an index is a BAI (``BAI\\1``), a CSI (BGZF inflating to ``CSI\\1``) or a CRAI
    (gzip of tab-separated integers). Only the first block is inflated: the reads are judged
    by htslib at ingest, where an unreadable file fails the job with its name.
    """

    def __init__(self, display_name: str, *, role: str) -> None:
        if role not in ("alignment", "index"):
            raise ValueError(f"role must be 'alignment' or 'index', not {role!r}")
        self._name = display_name
        self._role = role
        self._head = b""
        self._kind: str | None = None
        self._bam_header: bytes | None = None  # a BAM's first bytes, until its contigs are read

    @property
    def kind(self) -> str:
        """'bam' or 'cram' (alignment); 'bai', 'csi' or 'crai' (index)."""
        if self._kind is None:
            raise RuntimeError("AlignmentCheck.kind is known only after finish()")
        return self._kind

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self._kind is None:
            take = 2 * _BLOCK_MAX - len(self._head)
            self._head += chunk[:take]
            if len(self._head) < 2 * _BLOCK_MAX:
                return
            self._judge()
            chunk = chunk[take:]
        if self._kind == "bam" and self._bam_header is not None and chunk:
            self._bam_header += chunk[: _BAM_HEADER_MAX - len(self._bam_header)]
            self._judge_bam_build(final=False)

    def finish(self) -> None:
        if self._kind is None:
            self._judge()
        if self._kind == "bam" and self._bam_header is not None:
            self._judge_bam_build(final=True)

    def _judge_bam_build(self, *, final: bool) -> None:
        """Refuse a BAM aligned to GRCh37: the tracked loci are GRCh38 positions, and counting
        them in GRCh37 reads would give plausible-looking, wrong evidence."""
        assert self._bam_header is not None
        contigs = _bam_contigs(self._bam_header)
        if contigs is None:
            if final or len(self._bam_header) >= _BAM_HEADER_MAX:
                self._bam_header = None  # a header this large is judged by htslib alone
            return
        self._bam_header = None
        builds = {v.build: v.detail for v in contig_votes(contigs) if v.source == "contig_lengths"}
        if "GRCh37" in builds and "GRCh38" not in builds:
            self._refuse(
                f"the reads are aligned to GRCh37 ({builds['GRCh37']}); the tracked loci are "
                "counted at GRCh38 positions, so send an alignment to GRCh38"
            )

    def _judge(self) -> None:
        head = self._head
        if not head:
            self._refuse("the file is empty (0 bytes)")
        if head[:2] != _GZIP_MAGIC:
            raw = {"alignment": {b"CRAM": "cram"}, "index": {b"BAI\x01": "bai"}}[self._role]
            self._kind = raw.get(head[:4]) or self._refuse(self._what(head))
            return
        content = self._first_member(head)
        bgzf = head[3] & 0x04 and _BGZF_EXTRA in head[12:18]
        if self._role == "alignment" and bgzf and content.startswith(b"BAM\x01"):
            self._kind = "bam"
            self._bam_header = head
            self._judge_bam_build(final=False)
        elif self._role == "index" and bgzf and content.startswith(b"CSI\x01"):
            self._kind = "csi"
        elif self._role == "index" and _is_crai(content):
            self._kind = "crai"
        else:
            self._refuse(self._what(content, compressed=True))
        self._head = b""

    def _first_member(self, head: bytes) -> bytes:
        inflater = zlib.decompressobj(wbits=31)
        try:
            return inflater.decompress(head, _BLOCK_MAX)
        except zlib.error as exc:
            self._refuse(f"corrupt gzip data ({exc})")

    def _what(self, head: bytes, *, compressed: bool = False) -> str:
        expected = (
            "a BAM (BGZF, starting with BAM\\1) or a CRAM file"
            if self._role == "alignment"
            else "a BAM index (.bai, .csi) or a CRAM index (.crai)"
        )
        what = next((text for magic, text in _LOOKS_LIKE if head.startswith(magic)), None)
        if head.startswith(b"##fileformat=VCF") or head.startswith(b"BCF\x02"):
            what = "variant calls (send those as 'file')"
        elif head.startswith((b"BAI\x01", b"CSI\x01")) or (compressed and _is_crai(head)):
            what = "an index (send it as 'alignment_index')"
        elif head.startswith(b"BAM\x01") and compressed:
            what = "a BAM (send it as 'alignment')"
        elif head.startswith(b"CRAM"):
            what = "a CRAM (send it as 'alignment')"
        elif what is None:
            what = "text" if _is_text(head[:_HEAD]) else "binary data"
        inside = ", gzip-compressed" if compressed else ""
        return f"not {expected}: it looks like {what}{inside}"

    def _refuse(self, reason: str) -> NoReturn:
        raise InvalidInput(f"{self._name}: {reason}")


_BAM_HEADER_MAX = 8 << 20  # compressed bytes read for a BAM's contig list


def _bam_contigs(raw: bytes) -> list[tuple[str, int | None]] | None:
    """(name, length) of a BAM's references, from its first BGZF blocks; None while the
    bytes end before the list does (or are not readable: htslib will say so at ingest)."""
    content = bytearray()
    data = raw
    while data[:2] == _GZIP_MAGIC:
        inflater = zlib.decompressobj(wbits=31)
        try:
            content += inflater.decompress(data)
        except zlib.error:
            return None
        if not inflater.eof:
            break
        data = inflater.unused_data
        if len(content) >= 4 and (parsed := _parse_bam_references(bytes(content))) is not None:
            return parsed
    return _parse_bam_references(bytes(content))


def _parse_bam_references(content: bytes) -> list[tuple[str, int | None]] | None:
    def integer(at: int) -> int | None:
        return int.from_bytes(content[at : at + 4], "little") if at + 4 <= len(content) else None

    text_length = integer(4)
    if text_length is None:
        return None
    at = 8 + text_length
    count = integer(at)
    if count is None:
        return None
    at += 4
    contigs: list[tuple[str, int | None]] = []
    for _ in range(count):
        name_length = integer(at)
        if name_length is None or at + 8 + name_length > len(content):
            return None
        name = content[at + 4 : at + 4 + name_length].rstrip(b"\x00").decode("ascii", "replace")
        contigs.append((name, integer(at + 4 + name_length)))
        at += 8 + name_length
    return contigs


def _is_crai(content: bytes) -> bool:
    """A CRAI inflates to lines of six tab-separated integers (none for an empty CRAM)."""
    lines = content.split(b"\n")
    complete = lines[:-1] if len(lines) > 1 else lines
    return all(
        len(fields := line.split(b"\t")) == 6 and all(f.lstrip(b"-").isdigit() for f in fields)
        for line in complete
        if line
    ) and (not content or b"\t" in content)
