"""Gene / protein change from the file's own annotation or the hotspot table, and agreement."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.genomics.annotate import (
    VERIFICATION_STATUSES,
    FileAnnotation,
    annotate,
    annotation_fields,
    decode_annovar,
    file_annotation,
    hotspot_build,
    hotspot_for,
    load_hotspots,
    normalize_protein_change,
)
from services.genomics.types import Locus
from services.genomics.vcf import read_vcf

PUBLIC_VCF = Path(__file__).resolve().parents[1] / "data" / "public" / "vcf"
LOCAL = Path(__file__).resolve().parents[1] / "data" / "vcf"
H1047R = Locus("chr3", 179234297, "A", "G")


@pytest.mark.parametrize(
    ("spelled", "short"),
    [
        ("p.His1047Arg", "p.H1047R"),
        ("ENSP00000263967.3:p.His1047Arg", "p.H1047R"),
        ("p.(Glu545Lys)", "p.E545K"),
        ("p.H1047R", "p.H1047R"),
        ("H1047R", "p.H1047R"),
        ("p.Glu545Lys/c.1633G>A", "p.E545K"),
        ("p.Leu100%3D", "p.L100="),
        ("p.Arg213Ter", "p.R213*"),
        ("p.Lys100ArgfsTer5", "p.K100Rfs*5"),
        ("p.Glu746_Ala750del", "p.E746_A750del"),
        ("p.Tyr772_Ala775dup", "p.Y772_A775dup"),
        ("", None),
        (".", None),
        ("c.3140A>G", None),
        (None, None),
    ],
)
def test_normalize_protein_change(spelled: str | None, short: str | None) -> None:
    assert normalize_protein_change(spelled) == short


def test_hotspot_table_loads_with_one_letter_spelling() -> None:
    spots = load_hotspots()
    assert len(spots) == 53
    assert {s.verification for s in spots} == set(VERIFICATION_STATUSES)
    assert all(s.sources.startswith("S") for s in spots)
    assert all(s.protein_change == normalize_protein_change(s.protein_change) for s in spots)
    spot = hotspot_for(H1047R)
    assert spot is not None and (spot.gene, spot.protein_change) == ("PIK3CA", "p.H1047R")


# Multi-base hotspot alleles as a caller writes them, without CSQ/ANN: (GRCh37 POS, GRCh38 POS,
# REF, ALT) on the contig, and the protein change the table gives (domain-anchors §3.2).
_MULTI_BASE = [
    ("6", 152382152, 152061017, "TTGG", "T", "ESR1", "p.V422del"),
    ("6", 152415537, 152094402, "T", "C", "ESR1", "p.S463P"),
    ("6", 152419920, 152098785, "T", "A", "ESR1", "p.L536H"),
    ("6", 152419920, 152098785, "TC", "AT", "ESR1", "p.L536H"),
    ("6", 152419920, 152098785, "T", "C", "ESR1", "p.L536P"),
    ("6", 152419920, 152098785, "TC", "AG", "ESR1", "p.L536Q"),
    ("6", 152419922, 152098787, "TA", "AG", "ESR1", "p.Y537S"),
    ("6", 152419923, 152098788, "AT", "CA", "ESR1", "p.Y537S"),
    ("6", 152419922, 152098787, "T", "G", "ESR1", "p.Y537D"),
    ("3", 178928079, 179210291, "G", "A", "PIK3CA", "p.E453K"),
    ("3", 178938934, 179221146, "G", "A", "PIK3CA", "p.E726K"),
    ("3", 178952072, 179234284, "A", "G", "PIK3CA", "p.M1043V"),
    ("17", 37868208, 39711955, "CC", "AT", "ERBB2", "p.S310Y"),
    ("17", 37880981, 39724728, "A", "AGCATACGTGATG", "ERBB2", "p.Y772_A775dup"),
    ("17", 37880984, 39724731, "A", "ATACGTGATGGCT", "ERBB2", "p.Y772_A775dup"),
    ("17", 37881001, 39724748, "T", "TGGGCTCCCC", "ERBB2", "p.G778_P780dup"),
    ("17", 37881002, 39724749, "G", "GGGCTCCCCA", "ERBB2", "p.G778_P780dup"),
    ("17", 37881392, 39725139, "A", "G", "ERBB2", "p.T862A"),
    ("17", 37881414, 39725161, "T", "G", "ERBB2", "p.L869R"),
]


def _unannotated_vcf(path: Path, build: str, records: list[tuple[str, int, str, str]]) -> Path:
    chrom = "" if build == "GRCh37" else "chr"
    lines = [
        "##fileformat=VCFv4.2",
        f"##reference={build}",
        '##FORMAT=<ID=AD,Number=R,Type=Integer,Description="Allelic depths">',
        '##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Depth">',
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tPLASMA",
    ]
    order = {"3": 0, "6": 1, "17": 2}
    for contig, pos, ref, alt in sorted(records, key=lambda r: (order[r[0]], r[1], r[2], r[3])):
        lines.append(f"{chrom}{contig}\t{pos}\t.\t{ref}\t{alt}\t.\tPASS\t.\tAD:DP\t990,10:1000")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("build", ["GRCh37", "GRCh38"])
def test_unannotated_multi_base_hotspots_are_found_by_coordinates(
    tmp_path: Path, build: str
) -> None:
    """No CSQ/ANN: deletions, duplications and MNVs get their gene and protein change from
    hotspots.tsv on either build, each allele exactly (an MNV is not its first base's SNV)."""
    records = [
        (contig, pos37 if build == "GRCh37" else pos38, ref, alt)
        for contig, pos37, pos38, ref, alt, _, _ in _MULTI_BASE
    ]
    vcf = _unannotated_vcf(tmp_path / f"{build}.vcf", build, records)
    result = read_vcf(vcf, display_name="unannotated.vcf", sample_type="plasma")
    assert result.build == build
    found = {
        (v.locus.pos if v.locus else None, v.ref, v.alt): (v.gene, v.protein_change, v.hotspot)
        for v in result.variants
    }
    expected = {
        (pos38, ref, alt): (gene, protein, True)
        for _, _, pos38, ref, alt, gene, protein in _MULTI_BASE
    }
    # VariantCall.ref/alt are the sample's trimmed alleles: the same on both builds here.
    assert found == expected
    assert all(v.annotation_source == "hotspots" for v in result.variants)


def test_t798i_and_g776delinsvc_have_no_coordinates_only_protein_changes() -> None:
    """domain-anchors §3.1: no citable genomic record; matched from a file's annotation only."""
    proteins = {(s.gene, s.protein_change) for s in load_hotspots()}
    assert ("ERBB2", "p.T798I") not in proteins
    assert ("ERBB2", "p.G776delinsVC") not in proteins
    locus = Locus("chr17", 39724900, "C", "T")  # wherever a caller put it
    annotated = annotate(
        locus,
        "GRCh38",
        "chr17",
        locus.pos,
        FileAnnotation("ERBB2", normalize_protein_change("p.Thr798Ile"), "CSQ"),
    )
    assert (annotated.gene, annotated.protein_change, annotated.hotspot) == (
        "ERBB2",
        "p.T798I",
        False,
    )


def test_hotspot_build_needs_hits_on_exactly_one_build() -> None:
    assert hotspot_build([("chr3", 178952085, "A", "G")]) == "GRCh37"
    assert hotspot_build([("chr3", 179234297, "A", "G")]) == "GRCh38"
    assert hotspot_build([("chr3", 178952085, "A", "G"), ("chr3", 179234297, "A", "G")]) is None
    assert hotspot_build([("chr1", 100, "A", "G")]) is None


# --- the table and the file must agree --------------------------------------------------------


def test_pik3ca_sites_file_hotspots_come_from_the_table() -> None:
    result = read_vcf(
        PUBLIC_VCF / "gatk_funcotator_PIK3CA_SNPS_sites.vcf",
        display_name="PIK3CA_SNPS.vcf",
        sample_type="plasma",
    )
    assert (result.build, result.build_source) == ("GRCh37", "reference_header")
    assert len(result.variants) == 15 and all(v.gene == "PIK3CA" for v in result.variants)
    hotspots = [v for v in result.variants if v.hotspot]
    assert {(v.pos, v.protein_change) for v in hotspots} == {
        (178936091, "p.E545K"),
        (178952085, "p.H1047L"),
    }
    for call in hotspots:
        spot = hotspot_for(call.locus)
        assert spot is not None and call.protein_change == spot.protein_change


def test_funcotator_annotation_agrees_with_the_table_for_every_hotspot() -> None:
    # The GATK PIK3CA sites with Funcotator annotation on the two hotspot alleles.
    result = read_vcf(
        LOCAL / "funcotator_pik3ca_annotated.vcf",
        display_name="funcotated.vcf",
        sample_type="plasma",
    )
    hotspots = [v for v in result.variants if v.hotspot]
    assert len(hotspots) == 2
    for call in hotspots:
        spot = hotspot_for(call.locus)
        assert spot is not None
        # "FUNCOTATION" as the source means the file's spelling, normalised, equalled the table.
        assert (call.protein_change, call.annotation_source) == (spot.protein_change, "FUNCOTATION")
    assert all(v.annotation_source == "regions" for v in result.variants if not v.hotspot)


def test_vep_three_letter_hgvsp_agrees_with_the_table() -> None:
    result = read_vcf(
        LOCAL / "vep_csq_three_letter.vcf", display_name="vep.vcf", sample_type="plasma"
    )
    assert [
        (v.gene, v.protein_change, v.hotspot, v.annotation_source) for v in result.variants
    ] == [
        ("PIK3CA", "p.H1047R", True, "CSQ"),
        ("ESR1", "p.D538G", True, "CSQ"),
    ]


def test_snpeff_ann_entry_is_chosen_per_alt_allele() -> None:
    result = read_vcf(
        LOCAL / "snpeff_ann_multiallelic.vcf", display_name="ann.vcf", sample_type="plasma"
    )
    assert [(v.alt, v.protein_change, v.annotation_source) for v in result.variants] == [
        ("G", "p.H1047R", "ANN"),
        ("T", "p.H1047L", "ANN"),
    ]


def test_table_wins_when_the_file_names_another_transcript() -> None:
    other = FileAnnotation("PIK3CA", "p.H1050R", "CSQ")
    assert annotate(H1047R, "GRCh38", "chr3", H1047R.pos, other).protein_change == "p.H1047R"
    assert annotate(H1047R, "GRCh38", "chr3", H1047R.pos, other).source == "hotspots"
    same = FileAnnotation("PIK3CA", normalize_protein_change("p.His1047Arg"), "ANN")
    assert annotate(H1047R, "GRCh38", "chr3", H1047R.pos, same).source == "ANN"


def test_non_hotspot_keeps_the_file_annotation_or_falls_back_to_the_gene_span() -> None:
    locus = Locus("chr6", 152098700, "C", "T")
    from_file = FileAnnotation("ESR1", "p.P508S", "CSQ")
    annotated = annotate(locus, "GRCh38", "chr6", locus.pos, from_file)
    assert (annotated.gene, annotated.protein_change, annotated.hotspot) == (
        "ESR1",
        "p.P508S",
        False,
    )
    bare = annotate(locus, "GRCh38", "chr6", locus.pos, None)
    assert (bare.gene, bare.protein_change, bare.source) == ("ESR1", None, "regions")
    assert annotate(None, "GRCh38", "chr1", 100, None).gene is None


# --- header-driven parsing of real annotated files --------------------------------------------


def test_vep_format_string_under_ann_is_parsed_from_its_header() -> None:
    result = read_vcf(
        PUBLIC_VCF / "bcftools_split-vep.7.vcf",
        display_name="split-vep.7.vcf",
        sample_type="tissue",
    )
    [call] = result.variants
    assert (call.gene, call.annotation_source) == ("FAM87B", "ANN")


def test_legacy_snpeff_eff() -> None:
    result = read_vcf(
        PUBLIC_VCF / "cyvcf2_test.snpeff.vcf",
        display_name="snpeff.vcf",
        sample_type="tissue",
        tumor_sample="1094PC0005",
    )
    assert (result.build, result.build_source) == ("GRCh37", "contig_lengths")
    calls = {(v.pos, v.alt): v for v in result.variants}
    assert (calls[(69428, "G")].gene, calls[(69428, "G")].protein_change) == ("OR4F5", "p.F113C")
    assert calls[(30548, "G")].gene == "FAM138A" and calls[(30548, "G")].protein_change is None
    assert all(v.annotation_source == "EFF" for v in result.variants)


def test_annotation_fields_recognise_each_layout() -> None:
    fields = annotation_fields(
        {
            "CSQ": "Consequence annotations from Ensembl VEP. Format: Allele|SYMBOL|HGVSp",
            "ANN": "Functional annotations: 'Allele | Annotation | Gene_Name | HGVS.p' ",
            "EFF": "Predicted effects. Format: 'Effect ( Effect_Impact | Amino_Acid_change | "
            "Gene_Name | Transcript [ | ERRORS | WARNINGS ] )' ",
            "FUNCOTATION": "Functional annotation from the Funcotator tool.  Funcotation fields "
            "are: Gencode_27_hugoSymbol|Gencode_27_proteinChange",
            "LOF": "Predicted loss of function effects for this variant. Format: 'Gene_Name | "
            "Gene_ID | Number_of_transcripts_in_gene | Percent_of_transcripts_affected'",
            "GMAF": "Global minor allele frequency. Format: GlobalMinorAllele|AlleleFreqGlobal",
        }
    )
    assert [(f.key, f.style) for f in fields] == [
        ("CSQ", "pipe"),
        ("ANN", "pipe"),
        ("EFF", "eff"),
        ("FUNCOTATION", "funcotator"),
    ]
    eff = fields[2]
    assert eff.columns[:2] == ("effectimpact", "aminoacidchange")


def test_vep_allele_spelling_for_indels() -> None:
    # VEP drops the first base shared by REF and every ALT, and writes "-" for nothing left.
    [field] = annotation_fields({"CSQ": "Format: Allele|SYMBOL|HGVSp"})
    values = {"CSQ": ("AAGT|PIK3CA|p.Glu110_Asp111insVal", "-|PIK3CA|p.Glu110del")}
    deletion = file_annotation([field], values, "CAAG", ("C", "CAAGT"), 1)
    insertion = file_annotation([field], values, "CAAG", ("C", "CAAGT"), 2)
    assert deletion is not None and deletion.protein_change == "p.E110del"
    assert insertion is not None and insertion.protein_change == "p.E110_D111insV"


# --- ANNOVAR ----------------------------------------------------------------------------------

_ANNOVAR_HEADER = "".join(
    [
        "##fileformat=VCFv4.2\n",
        "##contig=<ID=chr3,length=198295559>\n",
        "##contig=<ID=chr6,length=170805979>\n",
        "##contig=<ID=chr12,length=133275309>\n",
        '##INFO=<ID=ANNOVAR_DATE,Number=1,Type=String,Description="Flag the start of ANNOVAR">\n',
    ]
    + [
        f'##INFO=<ID={kind}.{db},Number=.,Type=String,Description="{kind}.{db} annotation '
        'provided by ANNOVAR">\n'
        for db in ("refGene", "knownGene")
        for kind in ("Func", "Gene", "GeneDetail", "ExonicFunc", "AAChange")
    ]
    + ["#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"]
)


def _annovar_info(db: str = "refGene", **fields: str) -> str:
    return "ANNOVAR_DATE=2020-06-08;" + ";".join(f"{k}.{db}={v}" for k, v in fields.items())


def test_annovar_picks_the_mane_transcript_and_decodes_escapes(tmp_path: Path) -> None:
    records = [
        # ESR1, not a hotspot: the MANE transcript NM_000125 is listed second.
        (
            "chr6\t152000000\t.\tC\tT\t.\tPASS\t"
            + _annovar_info(
                Func="exonic",
                Gene="ESR1",
                ExonicFunc="nonsynonymous_SNV",
                AAChange="ESR1:NM_001122742:exon4:c.C300T:p.P100L,"
                "ESR1:NM_000125:exon4:c.C360T:p.P120L",
            )
        ),
        # KRAS is not in the MANE table: the first transcript with a protein change.
        (
            "chr12\t25245350\t.\tC\tT\t.\tPASS\t"
            + _annovar_info(
                Func="exonic\\x3bsplicing",
                Gene="KRAS",
                GeneDetail="NM_033360:exon2:c.35-1G>A\\x3dsplice",
                AAChange="KRAS:NM_033360:exon2:c.G35A:p.G12D,KRAS:NM_004985:exon2:c.G35A:p.G12V",
            )
        ),
        # No protein change (intronic): the gene from Gene.refGene, escapes decoded.
        ("chr6\t152000100\t.\tC\tT\t.\tPASS\t" + _annovar_info(Func="intronic", Gene="ESR1")),
        # Intergenic between two genes: no single gene from the file; the gene span decides.
        (
            "chr3\t179234000\t.\tC\tT\t.\tPASS\t"
            + _annovar_info(Func="intergenic", Gene="NONE\\x3bPIK3CA", AAChange=".")
        ),
        # Only the knownGene database annotated this one.
        (
            "chr6\t152000200\t.\tG\tA\t.\tPASS\t"
            + _annovar_info(
                "knownGene", Gene="ESR1", AAChange="ESR1:uc003qom.4:exon4:c.G500A:p.R167Q"
            )
        ),
    ]
    path = tmp_path / "annovar.vcf"
    path.write_text(_ANNOVAR_HEADER + "".join(r + "\n" for r in records))
    result = read_vcf(path, display_name=path.name, sample_type="tissue")
    assert [(v.pos, v.gene, v.protein_change, v.annotation_source) for v in result.variants] == [
        (152000000, "ESR1", "p.P120L", "AAChange.refGene"),
        (25245350, "KRAS", "p.G12D", "AAChange.refGene"),
        (152000100, "ESR1", None, "AAChange.refGene"),
        (179234000, "PIK3CA", None, "regions"),
        (152000200, "ESR1", "p.R167Q", "AAChange.knownGene"),
    ]


def test_annovar_spelling_of_a_hotspot_agrees_with_the_table(tmp_path: Path) -> None:
    info = _annovar_info(
        Gene="PIK3CA", AAChange="PIK3CA:NM_006218:exon21:c.A3140G:p.H1047R", ExonicFunc="."
    )
    path = tmp_path / "annovar_hotspot.vcf"
    path.write_text(_ANNOVAR_HEADER + f"chr3\t179234297\t.\tA\tG\t.\tPASS\t{info}\n")
    [call] = read_vcf(path, display_name=path.name, sample_type="plasma").variants
    assert (call.protein_change, call.hotspot, call.annotation_source) == (
        "p.H1047R",
        True,
        "AAChange.refGene",
    )


def test_annovar_synonymous_and_escapes() -> None:
    assert normalize_protein_change("p.L100L") == "p.L100="
    assert normalize_protein_change("p.Leu100Leu") == "p.L100="
    assert normalize_protein_change("p.L100P") == "p.L100P"
    assert decode_annovar("exonic\\x3bsplicing") == "exonic;splicing"
    assert decode_annovar("a\\x3Db") == "a=b"
