"""The patient's tracked (tumour-informed) variants."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from schemas.common import ApiModel, GenomeBuild

# A gene symbol (HGNC, clone name, Ensembl id) and a protein change as given by a person: no
# formula, markup or control character can start or hide in them (they reach plots and CSV
# exports). GENE_SYMBOL is services/genomics/annotate.py's, duplicated (a test guards it).
GENE_SYMBOL = r"^[A-Za-z0-9][A-Za-z0-9._@/-]{0,31}$"
PROTEIN_CHANGE = r"^[A-Za-z0-9][A-Za-z0-9.*=?_()>:+-]{0,127}$"


class TrackedVariantIn(ApiModel):
    """A locus by its GRCh38 key ("chr3:179234297:A>G"), or by chrom/pos/ref/alt on a build."""

    locus_key: str | None = Field(default=None, max_length=2200)
    chrom: str | None = Field(default=None, max_length=64)
    pos: int | None = Field(default=None, ge=1, le=300_000_000)
    ref: str | None = Field(default=None, min_length=1, max_length=1000, pattern=r"^[ACGTNacgtn]+$")
    alt: str | None = Field(default=None, min_length=1, max_length=1000, pattern=r"^[ACGTNacgtn]+$")
    build: GenomeBuild = "GRCh38"
    gene: str | None = Field(default=None, max_length=32, pattern=GENE_SYMBOL)
    protein_change: str | None = Field(default=None, max_length=128, pattern=PROTEIN_CHANGE)
    tumor_af: float | None = Field(default=None, gt=0, le=1)

    @model_validator(mode="after")
    def _one_identity(self) -> TrackedVariantIn:
        coords = (self.chrom, self.pos, self.ref, self.alt)
        if self.locus_key is None and any(c is None for c in coords):
            raise ValueError("give locus_key, or all of chrom, pos, ref and alt")
        return self


class TrackedVariantsPut(ApiModel):
    variants: list[TrackedVariantIn] = Field(max_length=5000)


class TrackedVariantRead(ApiModel):
    locus_key: str
    chrom: str
    pos: int
    ref: str
    alt: str
    gene: str | None
    protein_change: str | None
    tumor_af: float | None
    source: Literal["tissue", "manual"]
    kept: bool
    reason: str | None


class TrackedVariantList(ApiModel):
    patient_id: str
    items: list[TrackedVariantRead]
