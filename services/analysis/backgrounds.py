"""The background evidence of a site's assays, loaded from the stored variant rows, and the
fitted background model of each assay (``services.genomics.background``).

Controls pool within one assay of one site (``CTDNA_CROSS_SITE_CONTROLS`` pools every site's
samples of the same assay name instead); the choice is the model's ``scope`` and is recorded
in every call. Everything is read in a fixed order and the model is a stored row, so the same
data give the same calls in any worker process (no per-process cache)."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import structlog
from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session

from services.analysis.models import BackgroundModel
from services.config import get_settings
from services.db import utcnow
from services.genomics.background import (
    AssayModel,
    BackgroundCounts,
    BackgroundParams,
    DrawLocus,
    fit_assay_model,
)
from services.genomics.mrd import MrdParams, allele_weights
from services.samples.models import Sample
from services.variants.models import TrackedVariant, Variant

log = structlog.get_logger(__name__)

ALL_SITES = "*"
# A model is refitted once its assay has this many times the samples it was fitted on.
REFIT_GROWTH = 1.5
# The fit reads the rows of at most this many of the assay's latest samples.
FIT_SAMPLE_WINDOW = 5_000


def scope_of(site: str) -> str:
    """The controls a site's calls rest on: its own, or every site's when it opts in."""
    return ALL_SITES if get_settings().cross_site_controls else site


def _in_scope(scope: str, assay: str) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = [Sample.assay == assay, Sample.status == "processed"]
    if scope != ALL_SITES:
        clauses.append(Sample.site == scope)
    return clauses


@dataclass(frozen=True, slots=True)
class StoredModel:
    """The assay model a call rests on (None: too little background), with its identity."""

    scope: str
    assay: str
    model: AssayModel | None
    digest: str | None
    n_samples: int
    fitted_at: str

    def describe(self) -> dict[str, object]:
        return {
            "assay": self.assay,
            "controls_scope": "all sites" if self.scope == ALL_SITES else "site",
            "digest": self.digest,
            "fitted_at": self.fitted_at,
            "samples": self.n_samples,
            "sigma": None if self.model is None else self.model.sigma,
            "loci": None if self.model is None else self.model.n_loci,
        }


def _stored(row: BackgroundModel) -> StoredModel:
    return StoredModel(
        scope=row.scope,
        assay=row.assay,
        model=AssayModel.from_json(json.loads(row.body)) if row.body else None,
        digest=row.digest,
        n_samples=row.n_samples,
        fitted_at=row.fitted_at.isoformat(),
    )


def _material_change(old: AssayModel | None, new: AssayModel | None) -> bool:
    """Whether calls made on ``old`` may change on ``new`` (then the assay's patients are
    recomputed): a model appears or vanishes, sigma moves a grid step, a prior mean by 10 %."""
    if old is None or new is None:
        return old is not new
    if abs(old.sigma - new.sigma) > 1e-9:
        return True
    before, after = dict(old.priors), dict(new.priors)
    if set(before) != set(after):
        return True
    return any(abs(math.log(after[c].mean / before[c].mean)) > 0.1 for c in before)


def current_model(
    session: Session, site: str, assay: str, params: BackgroundParams, mrd: MrdParams
) -> tuple[StoredModel, bool]:
    """The assay's latest model, refitted first when the assay has grown by half since (or
    has none yet). Returns it and whether a refit changed it materially."""
    scope = scope_of(site)
    count = session.scalar(select(func.count(Sample.id)).where(*_in_scope(scope, assay))) or 0
    latest = session.scalar(
        select(BackgroundModel)
        .where(BackgroundModel.scope == scope, BackgroundModel.assay == assay)
        .order_by(BackgroundModel.id.desc())
        .limit(1)
    )
    # Refitted once the assay has grown by half; while it has no model at all (too little
    # background), at every recompute: its data are few, and a re-extraction of the panel of
    # normals at a new tracked set adds rows without adding samples.
    fresh = latest is not None and (
        count < max(latest.n_samples + 1, REFIT_GROWTH * latest.n_samples)
    )
    if latest is not None and latest.body is not None and fresh:
        return _stored(latest), False
    controls, draws = fit_inputs(session, scope, assay, mrd)
    model = fit_assay_model(controls, params, draws=draws)
    row = BackgroundModel(
        scope=scope,
        assay=assay,
        n_samples=count,
        digest=None if model is None else model.digest,
        body=None if model is None else json.dumps(model.to_json(), sort_keys=True),
        fitted_at=utcnow(),
    )
    session.add(row)
    session.flush()
    previous = _stored(latest).model if latest is not None else None
    changed = latest is not None and _material_change(previous, model)
    log.info(
        "background.fitted",
        scope=scope,
        assay=assay,
        samples=count,
        loci=None if model is None else model.n_loci,
        sigma=None if model is None else model.sigma,
        changed=changed,
    )
    return _stored(row), changed


def fit_inputs(
    session: Session, scope: str, assay: str, mrd: MrdParams
) -> tuple[dict[str, list[BackgroundCounts]], list[list[DrawLocus]]]:
    """What the assay model is fitted on, from the assay's latest ``FIT_SAMPLE_WINDOW``
    samples: the independent controls of every locus (panel-of-normal plasmas, each patient's
    matched normal once, other patients' plasma at loci they do not track) and every plasma
    draw at its patient's tracked loci (the fit weighs each by P(no ctDNA))."""
    window = (
        select(Sample.id)
        .where(*_in_scope(scope, assay), Sample.sample_type.in_(("plasma", "normal")))
        .order_by(Sample.id.desc())
        .limit(FIT_SAMPLE_WINDOW)
        .subquery()
    )
    rows = session.execute(
        select(
            Sample.id,
            Sample.patient_pk,
            Sample.sample_type,
            Sample.resolved_normal_sample,
            Variant.locus_key,
            Variant.alt_reads,
            Variant.depth,
            Variant.normal_alt_reads,
            Variant.normal_depth,
            TrackedVariant.tumor_af,
            TrackedVariant.id.is_not(None).label("own_locus"),
        )
        .join(Variant, Variant.sample_pk == Sample.id)
        .outerjoin(
            TrackedVariant,
            and_(
                TrackedVariant.patient_pk == Sample.patient_pk,
                TrackedVariant.locus_key == Variant.locus_key,
                TrackedVariant.kept.is_(True),
            ),
        )
        .where(Sample.id.in_(select(window.c.id)), Variant.locus_key.is_not(None))
        .order_by(Sample.id, Variant.locus_key)
    ).all()
    weights = _patient_weights(session, {r.patient_pk for r in rows if r.own_locus}, mrd)
    controls: dict[str, list[BackgroundCounts]] = defaultdict(list)
    normals: dict[tuple[int, str, str], tuple[int, int]] = {}
    draws: dict[int, list[DrawLocus]] = defaultdict(list)
    for row in rows:
        key = row.locus_key
        if row.normal_depth and row.normal_alt_reads is not None:
            _keep_deepest(normals, (row.patient_pk, row.resolved_normal_sample or "", key), row)
        if not row.depth or row.alt_reads is None:
            continue
        alt = min(row.alt_reads, row.depth)
        if row.sample_type == "normal":
            controls[key].append(BackgroundCounts(alt, row.depth))
        elif row.own_locus:
            g = weights.get(row.patient_pk, {}).get(key)
            if g is not None:
                draws[row.id].append(DrawLocus(key, alt, row.depth, g))
        else:
            controls[key].append(BackgroundCounts(alt, row.depth))
    for (_, _, key), (alt, depth) in sorted(normals.items()):
        controls[key].append(BackgroundCounts(alt, depth))
    return dict(controls), [draws[sample] for sample in sorted(draws)]


def _keep_deepest(
    normals: dict[tuple[int, str, str], tuple[int, int]], key: tuple[int, str, str], row: object
) -> None:
    """One matched normal counted once per patient (and normal column), however many plasma
    VCFs carry it: the deepest copy of its counts."""
    alt, depth = min(row.normal_alt_reads, row.normal_depth), row.normal_depth  # type: ignore[attr-defined]
    if key not in normals or depth > normals[key][1]:
        normals[key] = (alt, depth)


def _patient_weights(
    session: Session, patients: Iterable[int], mrd: MrdParams
) -> dict[int, dict[str, float]]:
    """Per patient, the allele weight of each kept tracked locus (``allele_weights``)."""
    ids = sorted(patients)
    if not ids:
        return {}
    afs: dict[int, dict[str, float | None]] = defaultdict(dict)
    sources: dict[int, int | None] = {}
    for row in session.execute(
        select(
            TrackedVariant.patient_pk,
            TrackedVariant.locus_key,
            TrackedVariant.tumor_af,
            TrackedVariant.source_sample_pk,
        ).where(TrackedVariant.patient_pk.in_(ids), TrackedVariant.kept.is_(True))
    ):
        afs[row.patient_pk][row.locus_key] = row.tumor_af
        sources.setdefault(row.patient_pk, row.source_sample_pk)
    purities = dict(
        session.execute(
            select(Sample.id, Sample.tumor_purity).where(
                Sample.id.in_([s for s in sources.values() if s is not None])
            )
        ).all()
    )
    return {
        patient: allele_weights(
            table, mrd, purity=purities.get(source) if (source := sources.get(patient)) else None
        )
        for patient, table in afs.items()
    }


@dataclass(frozen=True, slots=True)
class LocusControls:
    """The independent controls of a patient's loci: other samples' (``shared``) and the
    patient's own normal rows (``own``: its matched normal, once, and its normal samples)."""

    shared: dict[str, list[BackgroundCounts]]
    own: dict[str, list[BackgroundCounts]]


# The controls of a locus are read up to this many rows, of the latest samples: enough to know
# its rate (a few hundred thousand molecules), and a recompute costs the same at any site size.
CONTROLS_PER_LOCUS = 100


def locus_controls(
    session: Session,
    scope: str,
    assay: str,
    patient_pk: int,
    keys: Sequence[str],
) -> LocusControls:
    """The independent controls of the given loci: the panel of normals, the matched normals
    (this patient's and any other's, once per patient), other patients' plasma at loci they
    do not track, at most ``CONTROLS_PER_LOCUS`` rows of other patients per locus (the latest
    samples first, so the same data give the same rows). The patient's own plasma draws are
    not controls here (its earlier NEGATIVE draws are added by the MRD series)."""
    if not keys:
        return LocusControls({}, {})
    wanted = sorted(set(keys))
    tracked_by_own_patient = (
        select(TrackedVariant.id)
        .where(
            TrackedVariant.patient_pk == Sample.patient_pk,
            TrackedVariant.locus_key == Variant.locus_key,
            TrackedVariant.kept.is_(True),
        )
        .exists()
    )
    columns = (
        Sample.id.label("sample_pk"),
        Sample.patient_pk,
        Sample.sample_type,
        Sample.resolved_normal_sample,
        Variant.locus_key,
        Variant.alt_reads,
        Variant.depth,
        Variant.normal_alt_reads,
        Variant.normal_depth,
    )
    base = (
        select(*columns)
        .join(Sample, Sample.id == Variant.sample_pk)
        .where(
            *_in_scope(scope, assay),
            Sample.sample_type.in_(("plasma", "normal")),
            Variant.locus_key.in_(wanted),
        )
    )
    ranked = (
        base.add_columns(
            tracked_by_own_patient.label("tracked"),
            func.row_number()
            .over(partition_by=Variant.locus_key, order_by=Sample.id.desc())
            .label("rank"),
        )
        .where(
            Sample.patient_pk != patient_pk,
            or_(
                Sample.sample_type == "normal",
                Variant.normal_depth > 0,
                ~tracked_by_own_patient,
            ),
        )
        .subquery()
    )
    others = select(ranked).where(ranked.c.rank <= CONTROLS_PER_LOCUS)
    mine = base.where(Sample.patient_pk == patient_pk)
    shared: dict[str, list[BackgroundCounts]] = defaultdict(list)
    own: dict[str, list[BackgroundCounts]] = defaultdict(list)
    normals: dict[tuple[int, str, str], tuple[int, int]] = {}
    rows = [*session.execute(others), *session.execute(mine)]
    for row in sorted(rows, key=lambda r: (r.sample_pk, r.locus_key)):
        key = row.locus_key
        mine_row = row.patient_pk == patient_pk
        if row.normal_depth and row.normal_alt_reads is not None:
            _keep_deepest(normals, (row.patient_pk, row.resolved_normal_sample or "", key), row)
        if not row.depth or row.alt_reads is None:
            continue
        counts = BackgroundCounts(min(row.alt_reads, row.depth), row.depth)
        if row.sample_type == "normal":
            (own if mine_row else shared)[key].append(counts)
        elif not mine_row and not row.tracked:
            shared[key].append(counts)
    for (patient, _, key), (alt, depth) in sorted(normals.items()):
        (own if patient == patient_pk else shared)[key].append(BackgroundCounts(alt, depth))
    return LocusControls(dict(shared), dict(own))


def assays_of(samples: Iterable[Sample]) -> list[str]:
    return sorted({s.assay for s in samples})


def describe_models(models: Mapping[str, StoredModel]) -> list[dict[str, object]]:
    return [models[a].describe() for a in sorted(models)]
