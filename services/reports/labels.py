"""Words for the codes of the API, for the people who read the web view, the report and the
`ctdna` tables: drug classes, clinical event types, the reasons of MRD calls and statuses.
The API keeps the codes; the technical term behind a plain label goes in a tooltip or the
methods section (`TERMS`)."""

from __future__ import annotations

from schemas.analyses import MRD_STATUS_LABELS

DRUG_CLASS_LABELS = {
    "aromatase_inhibitor": "aromatase inhibitor",
    "serd": "oestrogen-receptor degrader (SERD)",
    "cdk46_inhibitor": "CDK4/6 inhibitor",
    "pi3k_inhibitor": "PI3K inhibitor",
    "akt_inhibitor": "AKT inhibitor",
    "mtor_inhibitor": "mTOR inhibitor",
    "her2_tki": "HER2 kinase inhibitor",
    "her2_antibody": "HER2 antibody",
    "her2_adc": "HER2 antibody–drug conjugate",
    "chemotherapy": "chemotherapy",
    "other": "other therapy",
}
EVENT_LABELS = {
    "surgery": "surgery",
    "therapy_start": "therapy started",
    "therapy_stop": "therapy stopped",
    "clinical_relapse": "clinical relapse",
    "progression": "progression",
    "receptor_status": "receptor status",
    "molecular_relapse": "molecular relapse",
}
REASONS = {
    "score_above_threshold": "ctDNA signal above the calibrated threshold at ≥ 2 tracked loci",
    "score_below_threshold": "no ctDNA signal above the calibrated threshold",
    "signal_at_too_few_loci": "signal above the threshold, but mutant reads at fewer than 2 loci",
    "low_informative_reads": "too few informative reads (under 20,000) to call",
    "too_few_loci": "too few tracked loci reported in this draw",
    "early_postop": "under 14 days after surgery (too early to call)",
    "pre_surgery": "drawn before surgery",
    "background_unknown": "too little background data for this assay yet to call (post "
    "normal plasma or matched normals; the call follows once the site has enough)",
}
STATUS_TEXT = {
    **MRD_STATUS_LABELS,
    # the call of one draw
    "POSITIVE": "ctDNA positive",
    "NEGATIVE": "ctDNA negative",
    "INDETERMINATE": "indeterminate",
}
CALL_TEXT = {
    "POSITIVE": "positive",
    "NEGATIVE": "negative",
    "INDETERMINATE": "indeterminate",
}
# Plain label -> the technical term and what it means, for tooltips and the methods section.
TERMS = {
    "evidence": "INVAR generalised likelihood-ratio score of the draw against the threshold "
    "calibrated on its own depths (Wan et al., Sci Transl Med 2020)",
    "p": "probability of a score this high in a draw without ctDNA (posterior-predictive null)",
    "tumour_fraction": "ctDNA fraction: share of the cell-free DNA that comes from the tumour, "
    "estimated from the tracked loci (maximum likelihood, 95% profile-likelihood interval)",
    "lod95": "LoD95: the smallest ctDNA fraction this draw would have detected with 95% "
    "probability; a negative draw says ctDNA was below it, not absent",
    "informative_reads": "sum of the sequencing depths at the tracked loci",
    "heterogeneity": "MATH score (mutant-allele tumour heterogeneity): spread of the variant "
    "allele fractions of the draw; higher means more subclonal diversity",
    "clones": "variants grouped by how their allele fractions move together over time "
    "(beta-binomial trajectory mixture; the number of clones chosen by BIC)",
    "vaf": "variant allele fraction: share of the reads at a locus that carry the variant",
}


def drug_class_label(code: str | None) -> str:
    if not code:
        return ""
    return DRUG_CLASS_LABELS.get(code, code.replace("_", " "))


def event_label(code: str | None) -> str:
    if not code:
        return ""
    return EVENT_LABELS.get(code, code.replace("_", " "))


def reason_text(code: str | None) -> str:
    if not code:
        return ""
    return REASONS.get(code, code.replace("_", " "))


def call_text(code: str | None) -> str:
    if not code:
        return ""
    return CALL_TEXT.get(code, code.replace("_", " ").lower())
