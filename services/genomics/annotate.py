"""Gene and protein change of a variant, and whether it is a known hotspot.

Sources, best first: the file's own annotation (VEP CSQ, or a VEP-format string under another
INFO key such as ANN; SnpEff ANN; ANNOVAR table_annovar Gene.refGene / AAChange.refGene and
the .knownGene / .ensGene variants; legacy SnpEff EFF; GATK Funcotator FUNCOTATION), chosen
for the right ALT allele and the canonical (MANE Select) transcript where known; else the
hotspot table (data/hotspots.tsv) by GRCh38 locus, the exact trimmed allele (an MNV or a
duplication is its own row, never its first base's SNV); else the gene whose span covers the
position. For a hotspot the table's spelling wins, so a variant has one protein change
whatever tool annotated it (oncokb-annotator #192/#194 show why this matters).
Field order is read from each INFO header's Description, never assumed.
"""

from __future__ import annotations

import csv
import functools
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from services.genomics.build import canonical_chrom
from services.genomics.regions import gene_at
from services.genomics.types import Build, Locus

# --- protein change spelling ------------------------------------------------------------------

_ONE_LETTER = {
    "Ala": "A", "Arg": "R", "Asn": "N", "Asp": "D", "Cys": "C", "Gln": "Q", "Glu": "E",
    "Gly": "G", "His": "H", "Ile": "I", "Leu": "L", "Lys": "K", "Met": "M", "Phe": "F",
    "Pro": "P", "Ser": "S", "Thr": "T", "Trp": "W", "Tyr": "Y", "Val": "V", "Ter": "*",
    "Sec": "U", "Pyl": "O", "Xaa": "X", "Asx": "B", "Glx": "Z",
}  # fmt: skip
_THREE_LETTER = re.compile("|".join(_ONE_LETTER))
_PROTEIN_BODY = re.compile(r"[A-Za-z0-9*=?_\-]+")
_SYNONYMOUS = re.compile(r"([A-Z*])(\d+)\1")


# What a gene symbol looks like (HGNC symbols, clone names such as RP11-34P13.7, Ensembl
# ids): the file's annotation is free text, and a "symbol" that is a formula, markup or longer
# than the column is not one (the gene then comes from the monitored regions). Duplicated in
# schemas/variants.py (GENE_SYMBOL), guarded by a test.
GENE_SYMBOL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@/-]{0,31}")
MAX_PROTEIN_CHANGE = 128


def is_gene_symbol(text: str) -> bool:
    return GENE_SYMBOL.fullmatch(text) is not None


def normalize_protein_change(text: str | None) -> str | None:
    """HGVS p. in the one-letter short form: "ENSP0001.4:p.(His1047Arg)" -> "p.H1047R".

    Accepts VEP HGVSp (protein id prefix, %3D for "="), SnpEff HGVS.p, SnpEff 3 EFF
    ("E545K" or "p.Glu545Lys/c.1633G>A") and Funcotator ("p.H1047R"). None for empty or
    non-protein text.
    """
    if text is None:
        return None
    spelled = text.strip().replace("%3D", "=").replace("%3d", "=")
    spelled = spelled.rsplit(":", 1)[-1].split("/", 1)[0].strip()
    if spelled[:2] in ("c.", "n.", "g.", "m.", "r."):
        return None
    body = spelled[2:] if spelled.startswith("p.") else spelled
    if body.startswith("(") and body.endswith(")"):
        body = body[1:-1]
    if not body or body in (".", "-") or not _PROTEIN_BODY.fullmatch(body):
        return None
    short = _THREE_LETTER.sub(lambda m: _ONE_LETTER[m.group(0)], body)
    # ANNOVAR and SnpEff 3 write a synonymous change as "L100L"; HGVS says "L100=".
    same = _SYNONYMOUS.fullmatch(short)
    change = f"p.{same.group(1)}{same.group(2)}=" if same is not None else "p." + short
    return change if len(change) <= MAX_PROTEIN_CHANGE else None


# --- hotspot table ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hotspot:
    """One row of hotspots.tsv: the same allele on both builds (1-based), with how far its
    coordinates are verified (domain-anchors §3.1 status labels) and by which sources."""

    gene: str
    protein_change: str
    hgvs_c: str
    grch37_chrom: str  # UCSC style
    grch37_pos: int
    locus: Locus  # GRCh38
    verification: str  # one of VERIFICATION_STATUSES
    sources: str  # domain-anchors §3.1 source ids, e.g. "S1+S2+S2b+S3"

    @property
    def ref(self) -> str:
        return self.locus.ref

    @property
    def alt(self) -> str:
        return self.locus.alt


_HOTSPOT_COLUMNS = (
    "gene", "protein", "hgvs_c", "grch37_chrom", "grch37_pos", "grch38_chrom", "grch38_pos",
    "ref", "alt", "verification", "sources",
)  # fmt: skip

# domain-anchors §3.1: VERIFIED, two independent sources agree; VERIFIED† (the dagger is the
# anchors' own label), two sources that may share an upstream lineage; VERIFIED-POS, position
# and REF verified through a sibling allele at the same base; UNVERIFIED, one source. Alleles
# with no citable coordinate at all (ERBB2 T798I, G776delinsVC; ESR1 L469V) are not rows: they
# are matched by protein change only, from the file's own annotation.
VERIFICATION_STATUSES = ("VERIFIED", "VERIFIED†", "VERIFIED-POS", "UNVERIFIED")


@functools.cache
def load_hotspots() -> tuple[Hotspot, ...]:
    """The hotspot table shipped in services/genomics/data (read once per process)."""
    table = resources.files("services.genomics") / "data" / "hotspots.tsv"
    rows: list[Hotspot] = []
    reader = csv.DictReader(io.StringIO(table.read_text(encoding="utf-8")), delimiter="\t")
    missing = set(_HOTSPOT_COLUMNS) - set(reader.fieldnames or ())
    if missing:
        raise RuntimeError(f"hotspots.tsv lacks columns {sorted(missing)}")
    for line, row in enumerate(reader, start=2):
        if row["verification"] not in VERIFICATION_STATUSES:
            raise RuntimeError(
                f"hotspots.tsv line {line}: unknown verification {row['verification']!r}"
            )
        rows.append(
            Hotspot(
                gene=row["gene"],
                protein_change=normalize_protein_change(row["protein"]) or row["protein"],
                hgvs_c=row["hgvs_c"],
                grch37_chrom=canonical_chrom(row["grch37_chrom"]),
                grch37_pos=int(row["grch37_pos"]),
                locus=Locus(
                    canonical_chrom(row["grch38_chrom"]),
                    int(row["grch38_pos"]),
                    row["ref"],
                    row["alt"],
                ),
                verification=row["verification"],
                sources=row["sources"],
            )
        )
    return tuple(rows)


@functools.cache
def _hotspots_by_allele() -> dict[tuple[Build, str, int, str, str], Hotspot]:
    index: dict[tuple[Build, str, int, str, str], Hotspot] = {}
    for h in load_hotspots():
        index[("GRCh38", h.locus.chrom, h.locus.pos, h.ref, h.alt)] = h
        index[("GRCh37", h.grch37_chrom, h.grch37_pos, h.ref, h.alt)] = h
    return index


def hotspot_for(locus: Locus | None) -> Hotspot | None:
    """The hotspot row with exactly this GRCh38 allele, if any."""
    if locus is None:
        return None
    return _hotspots_by_allele().get(("GRCh38", locus.chrom, locus.pos, locus.ref, locus.alt))


def hotspot_positions(build: Build) -> list[tuple[str, int]]:
    """(UCSC chrom, 1-based pos) of every hotspot on `build`, for a targeted read."""
    return sorted({(k[1], k[2]) for k in _hotspots_by_allele() if k[0] == build})


def hotspot_build(alleles: Iterable[tuple[str, int, str, str]]) -> Build | None:
    """The one build whose hotspot coordinates the file's alleles hit exactly, if exactly one.

    An exact chrom/pos/REF/ALT hit on one build and none on the other is strong evidence: the
    same allele at the same number on the wrong build would need the reference to carry that
    REF base there by chance, and a caller to have called that ALT.
    """
    index = _hotspots_by_allele()
    hits: set[Build] = set()
    for chrom, pos, ref, alt in alleles:
        for build in ("GRCh37", "GRCh38"):
            if (build, chrom, pos, ref, alt) in index:
                hits.add(build)
    return hits.pop() if len(hits) == 1 else None


# --- the file's own annotation ----------------------------------------------------------------

AnnotationStyle = Literal["pipe", "eff", "funcotator", "annovar"]


@dataclass(frozen=True, slots=True)
class AnnotationField:
    """An INFO key carrying per-transcript annotation, with its column names in order."""

    key: str
    style: AnnotationStyle
    columns: tuple[str, ...]  # squashed lower-case names: "hgvsp", "genename", "symbol"
    related: tuple[str, ...] = ()  # other INFO keys read with it (ANNOVAR's Gene.refGene)

    @property
    def info_keys(self) -> tuple[str, ...]:
        return (self.key, *self.related)

    def column(self, *names: str) -> int | None:
        for name in names:
            if name in self.columns:
                return self.columns.index(name)
        return None


@dataclass(frozen=True, slots=True)
class FileAnnotation:
    gene: str | None
    protein_change: str | None  # normalised
    source: str  # the INFO key it came from


@dataclass(frozen=True, slots=True)
class Annotation:
    gene: str | None
    protein_change: str | None
    hotspot: bool
    source: str | None  # INFO key, "hotspots", "regions" or None


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_GENE_COLUMNS = ("symbol", "genename", "genesymbol", "hugosymbol", "gene")
_PROTEIN_COLUMNS = ("hgvsp", "hgvsprot", "aminoacidchange", "proteinchange")
_FUNCOTATOR_FIELDS = re.compile(r"Funcotation fields are:\s*(.+)", re.S)
_FORMAT_LIST = re.compile(r"Format:\s*'?\s*([^'\"]+)", re.S)
_EFF_LIST = re.compile(r"\(\s*(Effect_Impact[^)]*)\)", re.S)
# VEP first (CSQ is its default key), SnpEff ANN next, then legacy and GATK formats.
_KEY_PRIORITY = {
    "CSQ": 0, "ANN": 1, "AAChange.refGene": 2, "AAChange.knownGene": 3, "AAChange.ensGene": 4,
    "BCSQ": 5, "EFF": 6, "FUNCOTATION": 7,
}  # fmt: skip


def annotation_fields(info_descriptions: Mapping[str, str]) -> tuple[AnnotationField, ...]:
    """Find the annotation-bearing INFO keys of a header from their Descriptions.

    A VEP-format string under any key ("Format: Allele|Consequence|...|SYMBOL|...|HGVSp") and
    SnpEff's ANN ("Functional annotations: 'Allele | Annotation | ...'") are both pipe lists
    with an allele column; EFF and FUNCOTATION have their own layouts. Keys whose lists name
    neither a gene nor a protein column (e.g. SnpEff LOF, Illumina GMAF) are ignored.
    """
    fields = _annovar_fields(info_descriptions.keys())
    for key, description in info_descriptions.items():
        found = _field_from_description(key, description or "")
        if found is not None:
            fields.append(found)
    fields.sort(key=lambda f: (_KEY_PRIORITY.get(f.key, 4), f.key))
    return tuple(fields)


def _field_from_description(key: str, description: str) -> AnnotationField | None:
    funco = _FUNCOTATOR_FIELDS.search(description)
    if funco is not None:
        # Funcotator prefixes every column with its data source: Gencode_27_hugoSymbol.
        columns = tuple(_squash(c.strip().rsplit("_", 1)[-1]) for c in funco.group(1).split("|"))
        return AnnotationField(key, "funcotator", columns)
    eff = _EFF_LIST.search(description)
    if eff is not None:
        columns = tuple(_squash(c) for c in eff.group(1).replace("[", "").split("|"))
        return AnnotationField(key, "eff", tuple(c for c in columns if c))
    listed = _FORMAT_LIST.search(description)
    if listed is None and "|" in description and ":" in description:
        listed = re.search(r":\s*'?\s*([^'\"]+)", description)
    if listed is None or "|" not in listed.group(1):
        return None
    columns = tuple(_squash(c) for c in listed.group(1).strip().rstrip(".").split("|"))
    field = AnnotationField(key, "pipe", columns)
    has_allele = field.column("allele") is not None
    has_content = (
        field.column(*_GENE_COLUMNS) is not None or field.column(*_PROTEIN_COLUMNS) is not None
    )
    return field if has_allele and has_content else None


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return None if value in ("", ".", "-", "__UNKNOWN__", "Unknown") else value


def _raw(parts: list[str], i: int | None) -> str | None:
    return parts[i].strip() if i is not None and i < len(parts) else None


def _is_number(text: str) -> bool:
    # str.isdigit() accepts "²", which int() rejects.
    return text.isascii() and text.isdigit()


_IMPACT_RANK = {"HIGH": 3, "MODERATE": 2, "LOW": 1, "MODIFIER": 0}


def _vep_allele(ref: str, alts: Sequence[str], alt: str) -> str:
    # VEP drops the first base when REF and every ALT share it, and writes "-" for nothing
    # (Ensembl VEP documentation, "Complex VCF entries").
    if all(a[:1] == ref[:1] for a in alts) and any(len(a) != len(ref) for a in alts):
        return alt[1:] or "-"
    return alt


def file_annotation(
    fields: Sequence[AnnotationField],
    values: Mapping[str, tuple[str, ...]],
    ref: str,
    alts: Sequence[str],
    alt_index: int,
) -> FileAnnotation | None:
    """The file's gene/protein change for ALT number `alt_index` (1-based) of a record.

    `values` holds the raw INFO strings of the annotation keys, one element per comma-separated
    entry. The first key (in `fields` order) that has an entry for this allele wins.
    """
    for field in fields:
        raw = values.get(field.key, ())
        if not raw and field.style != "annovar":
            continue  # ANNOVAR may have Gene.X without AAChange.X
        if field.style == "annovar":
            found = _from_annovar(field, values, len(alts))
        elif field.style == "funcotator":
            found = _from_funcotator(field, raw, len(alts), alt_index)
        elif field.style == "eff":
            found = _from_eff(field, raw, len(alts), alt_index)
        else:
            found = _from_pipe(field, raw, ref, alts, alt_index)
        if found is not None:
            return found
    return None


def _from_pipe(
    field: AnnotationField, raw: tuple[str, ...], ref: str, alts: Sequence[str], alt_index: int
) -> FileAnnotation | None:
    alt = alts[alt_index - 1]
    spellings = {alt, _vep_allele(ref, alts, alt)}
    i_allele = field.column("allele")
    i_num = field.column("allelenum")
    i_gene = field.column(*_GENE_COLUMNS)
    i_protein = field.column(*_PROTEIN_COLUMNS)
    i_pick = field.column("pick")
    i_mane = field.column("maneselect", "mane")
    i_canonical = field.column("canonical")
    i_impact = field.column("impact", "annotationimpact")

    def cell(parts: list[str], i: int | None) -> str | None:
        return _clean(parts[i]) if i is not None and i < len(parts) else None

    best: tuple[tuple[int, ...], FileAnnotation] | None = None
    for entry in raw:
        parts = entry.split("|")
        number = cell(parts, i_num)
        if number is not None and _is_number(number):
            if int(number) != alt_index:
                continue
        elif len(alts) > 1 and _raw(parts, i_allele) not in spellings:
            continue  # "-" is a real allele spelling here, so the raw cell is compared
        gene = cell(parts, i_gene)
        protein = normalize_protein_change(cell(parts, i_protein))
        if gene is None and protein is None:
            continue
        rank = (
            cell(parts, i_pick) == "1",
            protein is not None,
            cell(parts, i_mane) is not None,
            cell(parts, i_canonical) == "YES",
            _IMPACT_RANK.get(cell(parts, i_impact) or "", -1),
        )
        score = tuple(int(r) for r in rank)
        if best is None or score > best[0]:
            best = (score, FileAnnotation(gene, protein, field.key))
    return best[1] if best is not None else None


_EFF_ENTRY = re.compile(r"([A-Za-z0-9_+&\-]+)\((.*)\)")


def _from_eff(
    field: AnnotationField, raw: tuple[str, ...], n_alts: int, alt_index: int
) -> FileAnnotation | None:
    i_gene = field.column("genename")
    i_protein = field.column("aminoacidchange")
    i_impact = field.column("effectimpact")
    i_genotype = field.column("genotypenumber", "genotype")
    best: tuple[tuple[int, int], FileAnnotation] | None = None
    for entry in raw:
        match = _EFF_ENTRY.fullmatch(entry.strip())
        if match is None:
            continue
        parts = match.group(2).split("|")

        def cell(i: int | None, parts: list[str] = parts) -> str | None:
            return _clean(parts[i]) if i is not None and i < len(parts) else None

        genotype = cell(i_genotype)
        if (
            genotype is not None
            and _is_number(genotype)
            and n_alts > 1
            and int(genotype) != alt_index
        ):
            continue
        gene = cell(i_gene)
        protein = normalize_protein_change(cell(i_protein))
        if gene is None and protein is None:
            continue
        score = (int(protein is not None), _IMPACT_RANK.get(cell(i_impact) or "", -1))
        if best is None or score > best[0]:
            best = (score, FileAnnotation(gene, protein, field.key))
    return best[1] if best is not None else None


_FUNCOTATOR_ESCAPE = re.compile(r"_%([0-9A-Fa-f]{2})_")


def _from_funcotator(
    field: AnnotationField, raw: tuple[str, ...], n_alts: int, alt_index: int
) -> FileAnnotation | None:
    # One element per ALT; inside it, transcripts as "[a|b|...]#[a|b|...]" (GATK
    # VcfOutputRenderer), with |,;= and spaces escaped as _%7C_ and the like.
    if len(raw) == n_alts:
        allele_value = raw[alt_index - 1]
    elif len(raw) == 1:
        allele_value = raw[0]
    else:
        return None
    i_gene = field.column("hugosymbol")
    i_protein = field.column("proteinchange")
    first: FileAnnotation | None = None
    for transcript in re.split(r"\]\s*#\s*\[", allele_value.strip().strip("[]")):
        parts = [
            _FUNCOTATOR_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), p)
            for p in transcript.split("|")
        ]
        gene = _clean(parts[i_gene]) if i_gene is not None and i_gene < len(parts) else None
        protein = normalize_protein_change(
            parts[i_protein] if i_protein is not None and i_protein < len(parts) else None
        )
        found = FileAnnotation(gene, protein, field.key)
        if protein is not None:
            return found
        if first is None and gene is not None:
            first = found
    return first


# ANNOVAR (table_annovar.pl -vcfinput): per gene database X, Func.X, Gene.X, ExonicFunc.X and
# AAChange.X ("PIK3CA:NM_006218:exon21:c.A3140G:p.H1047R", one entry per transcript, comma
# separated), with ';' and '=' inside values escaped as \x3b and \x3d.
_ANNOVAR_KEY = re.compile(r"(Func|Gene|GeneDetail|ExonicFunc|AAChange)\.(\w+)")
_ANNOVAR_ESCAPES = {"\\x3b": ";", "\\x3d": "=", "\\x2c": ",", "\\x20": " "}
_ANNOVAR_ESCAPE = re.compile("|".join(re.escape(e) for e in _ANNOVAR_ESCAPES), re.I)

_ANNOVAR_OUTSIDE = frozenset({"intergenic", "upstream", "downstream", "upstream;downstream"})

# The MANE Select (RefSeq) transcript of each monitored gene: the one whose protein change is
# reported when ANNOVAR lists several.
CANONICAL_TRANSCRIPTS = {
    "ESR1": "NM_000125",
    "PIK3CA": "NM_006218",
    "ERBB2": "NM_004448",
    "AKT1": "NM_005163",
}


def _annovar_fields(keys: Iterable[str]) -> list[AnnotationField]:
    present = set(keys)
    databases = sorted(
        {m.group(2) for k in present if (m := _ANNOVAR_KEY.fullmatch(k)) is not None}
    )
    fields = []
    for db in databases:
        gene, change, func = f"Gene.{db}", f"AAChange.{db}", f"Func.{db}"
        if gene in present or change in present:
            related = tuple(k for k in (gene, func) if k in present)
            fields.append(AnnotationField(change, "annovar", (), related))
    return fields


def decode_annovar(text: str) -> str:
    """ANNOVAR's escapes in VCF INFO values: "exonic\\x3bsplicing" -> "exonic;splicing"."""
    return _ANNOVAR_ESCAPE.sub(lambda m: _ANNOVAR_ESCAPES[m.group(0).lower()], text)


def _from_annovar(
    field: AnnotationField, values: Mapping[str, tuple[str, ...]], n_alts: int
) -> FileAnnotation | None:
    # One value per key for the whole record: it describes the record's only ALT (ANNOVAR
    # annotates a multi-allelic record's alleles in separate blocks that htslib cannot tell
    # apart, so those fall back to the hotspot table and gene spans).
    if n_alts != 1:
        return None
    entries = [decode_annovar(e) for e in values.get(field.key, ()) if _clean(decode_annovar(e))]
    best: tuple[tuple[int, int], FileAnnotation] | None = None
    for order, entry in enumerate(entries):
        parts = entry.split(":")
        gene = _clean(parts[0]) if parts else None
        transcript = parts[1].split(".", 1)[0] if len(parts) > 1 else None
        protein = next(
            (normalize_protein_change(p) for p in reversed(parts) if p.startswith("p.")), None
        )
        if gene is None and protein is None:
            continue
        canonical = gene is not None and CANONICAL_TRANSCRIPTS.get(gene) == transcript
        score = (int(canonical) * 2 + int(protein is not None), -order)
        if best is None or score > best[0]:
            best = (score, FileAnnotation(gene, protein, field.key))
    if best is not None:
        return best[1]
    gene_key, func_key = (f"{kind}.{field.key.split('.', 1)[1]}" for kind in ("Gene", "Func"))
    regions = {decode_annovar(f) for f in values.get(func_key, ())}
    genes = {decode_annovar(g) for g in values.get(gene_key, ()) if _clean(g)}
    # Intergenic, upstream and downstream sites name their neighbours ("GATA3;CELF2",
    # "NONE;CELF2"), and overlapping genes are two names: only one gene, inside it, counts.
    if regions & _ANNOVAR_OUTSIDE or len(genes) != 1 or ";" in next(iter(genes)):
        return None
    return FileAnnotation(genes.pop(), None, field.key)


# --- putting it together ----------------------------------------------------------------------


def annotate(
    locus: Locus | None, build: Build, chrom: str, pos: int, from_file: FileAnnotation | None
) -> Annotation:
    """Gene, protein change and hotspot flag of one trimmed allele.

    `chrom` (UCSC style) and `pos` are in the sample's build, for the gene-span fallback. A
    hotspot takes the table's gene and spelling; when the file's annotation, normalised, names
    a different protein change (another transcript), the table still wins.
    """
    spot = hotspot_for(locus)
    if spot is not None:
        agrees = from_file is not None and from_file.protein_change == spot.protein_change
        source = from_file.source if agrees and from_file is not None else "hotspots"
        return Annotation(spot.gene, spot.protein_change, True, source)
    if from_file is not None:
        named = from_file.gene if from_file.gene and is_gene_symbol(from_file.gene) else None
        gene = named or gene_at(build, chrom, pos)
        return Annotation(gene, from_file.protein_change, False, from_file.source)
    gene = gene_at(build, chrom, pos)
    return Annotation(gene, None, False, "regions" if gene is not None else None)
