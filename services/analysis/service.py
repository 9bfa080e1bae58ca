"""Recomputing a patient's analyses from its stored variant rows and clinical events.

Runs inside the unit of work of the change that calls for it (an ingest, a new event, a new
tracked set), so a client that sees its job succeed reads analyses that include its sample.
Results are stored as the JSON bodies the API returns (fast reads), with the parameter and
map versions that produced them. Transitions fire webhooks in the same transaction: a change
of MRD status (`mrd.status_changed`) and each new resistance event (`resistance.emerged`); a
result already issued is kept as issued, or amended with the reason the recompute was run
(services/analysis/amendments.py, `result.amended`)."""

from __future__ import annotations

import datetime as dt
import json
import zlib
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, cast

import numpy as np
import structlog
from pydantic import BaseModel
from sqlalchemy import delete, exists, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from schemas.analyses import ClonesBody, MrdBody, TrendsBody
from services.alerts import service as alerts
from services.analysis import amendments
from services.analysis import backgrounds as site_backgrounds
from services.analysis import resistance as resistance_answer
from services.analysis.models import PatientAnalysis
from services.analysis.serialize import dumps, jsonable
from services.db import unit_of_work, utcnow
from services.errors import InvalidInput
from services.genomics.background import (
    BackgroundParams,
    LocusBackground,
    locus_backgrounds,
)
from services.genomics.clones import CloneParams, fit_clones, sample_heterogeneity
from services.genomics.longitudinal import (
    LocusObservation,
    LocusSeries,
    LongitudinalParams,
    RelativeCCF,
    TumourFraction,
    baseline_clone,
    clonal_candidates,
    germline_suspected,
    longitudinal_report,
    math_scores,
    tumour_fractions,
)
from services.genomics.mrd import (
    MrdCall,
    MrdParams,
    MrdStatus,
    PatientStatus,
    PlasmaDraw,
    allele_weights,
    call_series,
    patient_seed,
)
from services.genomics.resistance import (
    ResistanceMap,
    ResistanceParams,
    load_resistance_map,
)
from services.genomics.therapy import (
    TherapyEvent,
    TherapyEventType,
    TherapyLine,
    therapy_lines,
)
from services.genomics.tracking import TissueCandidate, TrackingParams, select_tracked
from services.jobs import service as jobs
from services.jobs.models import Job
from services.patients.models import Patient, PatientEvent
from services.samples.models import Sample
from services.variants import service as variants
from services.variants.models import TrackedVariant, Variant

log = structlog.get_logger(__name__)

KINDS = ("mrd", "trends", "clones", "resistance")
CLONES_TASK = "patients.clones"
RECOMPUTE_TASK = "patients.recompute"
NOT_APPLICABLE = str(PatientStatus.NOT_APPLICABLE)
MAX_DROPPED_SHOWN = 200

MRD_PARAMS = MrdParams()
BACKGROUND_PARAMS = BackgroundParams()
TRACKING_PARAMS = TrackingParams()
LONGITUDINAL_PARAMS = LongitudinalParams()
CLONE_PARAMS = CloneParams()
RESISTANCE_PARAMS = ResistanceParams()


@lru_cache(maxsize=1)
def resistance_map() -> ResistanceMap:
    return load_resistance_map()


@dataclass(frozen=True, slots=True)
class _Row:
    """The columns of one variant row the analyses need."""

    sample_pk: int
    locus_key: str
    gene: str | None
    protein_change: str | None
    alt_reads: int | None
    depth: int | None
    passed: bool
    normal_alt_reads: int | None
    normal_depth: int | None
    in_monitored_gene: bool


@dataclass
class _Patient:
    """Everything loaded for one recompute."""

    patient: Patient
    samples: list[Sample]
    events: list[PatientEvent]
    tracked: list[TrackedVariant]
    rows_by_sample: dict[int, dict[str, _Row]] = field(default_factory=dict)

    def plasma(self) -> list[Sample]:
        return [s for s in self.samples if s.sample_type == "plasma"]

    def event_dates(self, kind: str) -> list[dt.date]:
        return sorted(e.event_date for e in self.events if e.type == kind)


def recompute_safely(session: Session, patient: Patient, reason: str) -> bool:
    """Recompute inside a savepoint: a failure of the analyses (a bug) is logged and leaves
    the previous analyses in place, and never undoes the change that triggered it."""
    try:
        with session.begin_nested():
            recompute(session, patient, reason)
    except OperationalError:
        # The database went away, not a bug: the whole unit of work fails and is retried (a
        # savepoint cannot be rolled back on a dead connection anyway).
        raise
    except Exception:  # the caller's stored data must survive an analysis bug (logged)
        log.exception("analysis.recompute_failed", patient_id=patient.patient_id)
        return False
    return True


def recompute(session: Session, patient: Patient, reason: str) -> None:
    """Refresh every stored analysis of the patient (and its tracked set, from tissue);
    `reason` (what changed) is what an amendment of an issued result says.

    The patient row is locked first, so two recomputes of one patient (two of its samples
    ingested at once by two workers) run one after the other and the later one reads what the
    earlier committed: the stored analyses always include every committed sample."""
    session.execute(select(Patient.id).where(Patient.id == patient.id).with_for_update())
    data = _load(session, patient)
    if _propose_tracked(session, data):
        data = _load(session, patient)
    evidence = _evidence(session, data)
    series = evidence.series
    lines = therapy_lines(
        TherapyEvent(
            type=cast(TherapyEventType, e.type),  # narrowed by the filter below
            date=e.event_date,
            drug=e.drug,
            drug_class=e.drug_class,
        )
        for e in data.events
        if e.type in ("therapy_start", "therapy_stop")
    )
    previous_mrd = stored_body(session, patient.id, "mrd")
    mrd_body = _mrd(data, evidence, json.loads(previous_mrd) if previous_mrd else None)
    answer = resistance_answer.resistance_body(
        data.patient.patient_id, series, lines, resistance_map(), RESISTANCE_PARAMS
    )
    resistance_body = answer.body
    issued = {"mrd": previous_mrd, "resistance": stored_body(session, patient.id, "resistance")}
    computed = {"mrd": mrd_body, "resistance": resistance_body}
    amendments.keep_issued(session, patient, reason, issued, computed)
    # After keep_issued: the trends show each draw's tumour fraction as /mrd issued it.
    trends_body = _trends(data, series, lines, mrd_body, resistance_body)

    previous = _stored_status(session, patient.id, "mrd")
    _store(session, patient.id, "mrd", mrd_body, mrd_body["status"])
    _store(session, patient.id, "trends", trends_body, None)
    request_clones(session, patient)
    _store(
        session,
        patient.id,
        "resistance",
        resistance_body,
        "emerging" if any(e.confirmation == "confirmed" for e in answer.held) else None,
    )
    _announce_mrd(session, patient, previous, mrd_body)
    resistance_answer.send(
        session,
        patient,
        resistance_answer.alerts_to_send(session, patient, answer),
    )


def request_clones(session: Session, patient: Patient) -> None:
    """Clone fitting (an EM over K with restarts) is the slowest analysis and the least
    urgent, so it runs as its own job, coalesced: one queued fit per patient at a time."""
    _queue_once(session, patient, CLONES_TASK)


def request_recompute(session: Session, patient: Patient, reason: str) -> Job:
    """Queue a `patients.recompute` of the patient, unless one is already queued (coalesced:
    any number of requests before it runs cost one recompute, which carries every reason).
    Returns the queued job."""
    return _queue_once(session, patient, RECOMPUTE_TASK, reason)


def _queue_once(session: Session, patient: Patient, task: str, reason: str | None = None) -> Job:
    """The patient's queued job of `task`, created if there is none."""
    pending = session.scalar(
        select(Job)
        .where(Job.patient_pk == patient.id, Job.task == task, Job.status == "queued")
        .limit(1)
    )
    if pending is not None:
        if reason:
            jobs.add_reason(pending, reason)
        return pending
    return jobs.create_job(
        session, task=task, site=patient.site, patient_pk=patient.id, reason=reason
    )


def request_recompute_of_trackers(session: Session, sample: Sample, reason: str) -> int:
    """A background changed (a normal sample arrived, or a sample that served as one was
    corrected or retracted): queue a recompute of every other patient of the site that tracks
    a locus this sample reports, so their calls use the change. Returns the number of
    patients queued."""
    loci = select(Variant.locus_key).where(
        Variant.sample_pk == sample.id, Variant.locus_key.is_not(None)
    )
    trackers = session.scalars(
        select(Patient)
        .join(TrackedVariant, TrackedVariant.patient_pk == Patient.id)
        .where(
            Patient.site == sample.site,
            Patient.id != sample.patient_pk,
            TrackedVariant.kept.is_(True),
            TrackedVariant.locus_key.in_(loci),
        )
        .distinct()
    ).all()
    for patient in trackers:
        request_recompute(session, patient, reason)
    return len(trackers)


def run_recompute(job_id: str) -> str:
    """The `patients.recompute` task: refresh the patient's analyses from its current data."""
    with unit_of_work() as session:
        if not jobs.claim(session, job_id):
            return "skipped"
    with unit_of_work() as session:
        job = session.get(Job, job_id, with_for_update=True)
        assert job is not None and job.patient_pk is not None
        patient = session.get(Patient, job.patient_pk)
        error = None
        reason = job.reason or "recompute requested"
        if patient is not None and not recompute_safely(session, patient, reason):
            error = "the analyses failed; the operators have the details in the worker log"
        jobs.finish(session, job, error=error)
    return "failed" if error else "succeeded"


# A clone fit yields to waiting ingests (it is the least urgent analysis): while samples wait
# it goes back to the queue and the sweep re-sends it, so a burst of samples of one patient
# costs one fit after the burst. A fit never waits longer than CLONES_MAX_DEFER_SECONDS.
CLONES_MAX_DEFER_SECONDS = 300


def release_deferred_clones() -> int:
    """Once no sample waits any more, the clone fits that yielded to them go out at once."""
    with unit_of_work() as session:
        if jobs.ingests_waiting(session):
            return 0
    return jobs.resend_deferred(CLONES_TASK)


def run_clones(job_id: str, *, defer: bool = True) -> str:
    """The `patients.clones` task: refit the patient's clones from its current data (unless
    samples wait for a worker and `defer`: then the job goes back to the queue)."""
    with unit_of_work() as session:
        if not jobs.claim(session, job_id):
            return "skipped"
    with unit_of_work() as session:
        job = session.get(Job, job_id, with_for_update=True)
        assert job is not None and job.patient_pk is not None
        waited = (utcnow() - job.created_at).total_seconds()
        if defer and waited < CLONES_MAX_DEFER_SECONDS and jobs.ingests_waiting(session):
            jobs.defer(job)
            return "deferred"
        patient = session.get(Patient, job.patient_pk)
        trends = stored_body(session, patient.id, "trends") if patient is not None else None
        if patient is not None and trends is not None:
            # The clones are fitted on the series the stored trends were computed from: no
            # second reading of the patient's rows and backgrounds.
            series = _series_of_trends(json.loads(trends))
            rng = np.random.default_rng(_seed(patient))
            _store(session, patient.id, "clones", _clones(patient, series, rng), None)
        jobs.finish(session, job)
    return "succeeded"


# --- loading ------------------------------------------------------------------------------------


def _load(session: Session, patient: Patient) -> _Patient:
    samples = list(
        session.scalars(
            select(Sample)
            .where(Sample.patient_pk == patient.id, Sample.status == "processed")
            .order_by(Sample.collection_date, Sample.id)
        )
    )
    events = list(
        session.scalars(
            select(PatientEvent)
            .where(PatientEvent.patient_pk == patient.id)
            .order_by(PatientEvent.event_date, PatientEvent.id)
        )
    )
    tracked = list(
        session.scalars(
            select(TrackedVariant)
            .where(TrackedVariant.patient_pk == patient.id)
            .order_by(TrackedVariant.locus_key)
        )
    )
    data = _Patient(patient, samples, events, tracked)
    ids = [s.id for s in samples if s.sample_type != "tissue"]
    if ids:
        for row in session.execute(
            select(
                Variant.sample_pk,
                Variant.locus_key,
                Variant.gene,
                Variant.protein_change,
                Variant.alt_reads,
                Variant.depth,
                Variant.passed,
                Variant.normal_alt_reads,
                Variant.normal_depth,
                Variant.in_monitored_gene,
            ).where(Variant.sample_pk.in_(ids), Variant.locus_key.is_not(None))
        ):
            # Ten columns in _Row's order, locus_key not NULL (the where above): the Row's
            # typed tuple (nullable locus_key, open-ended tail) cannot say so.
            values = cast("tuple[Any, ...]", row)
            data.rows_by_sample.setdefault(row.sample_pk, {})[row.locus_key] = _Row(*values)
    return data


@dataclass(frozen=True, slots=True)
class _Evidence:
    """What the analyses of one recompute rest on: the kept tracked loci with their allele
    weights, per assay the locus backgrounds and the stored model they come from, and the
    per-variant series."""

    tracked: list[TrackedVariant]
    weights: dict[str, float]
    backgrounds: dict[str, dict[str, LocusBackground]]
    models: dict[str, site_backgrounds.StoredModel]
    series: list[LocusSeries]


def _evidence(session: Session, data: _Patient) -> _Evidence:
    tracked = [t for t in data.tracked if t.kept]
    # A monitored variant needs its background only where it has mutant reads in some draw
    # (a locus read at 0 in every draw is detected nowhere, whatever its error rate): the
    # others keep their class prior, and a panel's hundreds of empty loci cost nothing.
    monitored: dict[str, bool] = {}
    for rows in data.rows_by_sample.values():
        for key, row in rows.items():
            if row.in_monitored_gene:
                monitored[key] = monitored.get(key, False) or bool(row.alt_reads)
    tracked_keys = {t.locus_key for t in tracked}
    models, backgrounds = _backgrounds(
        session,
        data,
        sorted(tracked_keys | set(monitored)),
        sorted(tracked_keys | {key for key, reads in monitored.items() if reads}),
    )
    weights = allele_weights(
        {t.locus_key: t.tumor_af for t in tracked},
        MRD_PARAMS,
        purity=_tissue_purity(data, tracked),
    )
    return _Evidence(
        tracked, weights, backgrounds, models, _series(data, tracked, backgrounds, weights)
    )


def _seed(patient: Patient) -> int:
    # Reproducible: the same data give the same calls, in any process.
    return zlib.crc32(f"{patient.site}/{patient.patient_id}".encode())


# --- tracked set from tissue --------------------------------------------------------------------


def _propose_tracked(session: Session, data: _Patient) -> bool:
    """Choose the tracked set from the latest tissue sample, unless the site set it
    explicitly or it was already chosen from that sample. Returns True when it changed
    (every other sample of the patient is then re-extracted at the new loci)."""
    tissue = [s for s in data.samples if s.sample_type == "tissue"]
    if not tissue or any(t.source == "manual" for t in data.tracked):
        return False
    source = tissue[-1]
    if data.tracked and all(t.source_sample_pk == source.id for t in data.tracked):
        return False
    candidates = [
        TissueCandidate(
            key=row.locus_key,
            gene=row.gene or "",
            chrom=row.chrom,
            pos=row.pos,
            ref=row.ref,
            alt=row.alt,
            vaf=row.alt_reads / row.depth,
            alt_reads=row.alt_reads,
            depth=row.depth,
            passed=row.passed,
            normal_vaf=(
                row.normal_alt_reads / row.normal_depth
                if row.normal_depth and row.normal_alt_reads is not None
                else None
            ),
            normal_depth=row.normal_depth,
        )
        for row in session.execute(
            select(
                Variant.locus_key,
                Variant.gene,
                Variant.chrom,
                Variant.pos,
                Variant.ref,
                Variant.alt,
                Variant.alt_reads,
                Variant.depth,
                Variant.passed,
                Variant.normal_alt_reads,
                Variant.normal_depth,
            ).where(
                Variant.sample_pk == source.id,
                Variant.locus_key.is_not(None),
                Variant.depth > 0,
                Variant.alt_reads.is_not(None),
            )
        )
    ]
    decisions = select_tracked(candidates, TRACKING_PARAMS)
    by_key = {c.key: c for c in candidates}
    session.execute(delete(TrackedVariant).where(TrackedVariant.patient_pk == data.patient.id))
    now = utcnow()
    # Every kept locus, and the strongest dropped candidates with their reasons (a tumour
    # exome has ~10^5 PASS variants; listing every one of them informs nobody).
    dropped = sorted((d for d in decisions if not d.kept), key=lambda d: -by_key[d.key].vaf)
    shown = [d for d in decisions if d.kept] + dropped[:MAX_DROPPED_SHOWN]
    for decision in shown:
        candidate = by_key[decision.key]
        session.add(
            TrackedVariant(
                patient_pk=data.patient.id,
                locus_key=decision.key,
                gene=candidate.gene or None,
                protein_change=None,
                tumor_af=candidate.vaf,
                source="tissue",
                source_sample_pk=source.id,
                kept=decision.kept,
                reason=f"{decision.reason}: {decision.detail}"[:256],
                created_at=now,
            )
        )
    session.flush()
    variants.reextract_patient(session, data.patient)
    log.info(
        "tracked.proposed",
        patient_id=data.patient.patient_id,
        kept=sum(d.kept for d in decisions),
        candidates=len(decisions),
    )
    return True


# --- background ---------------------------------------------------------------------------------


def _backgrounds(
    session: Session, data: _Patient, keys: Sequence[str], read: Sequence[str]
) -> tuple[dict[str, site_backgrounds.StoredModel], dict[str, dict[str, LocusBackground]]]:
    """Per assay of the patient's plasma draws: the assay's background model (refitted when
    the assay has grown enough; a material change queues a recompute of the assay's other
    MRD patients) and the posterior of each locus of ``keys`` from its independent controls
    (read for the loci of ``read``; the others keep their class prior)."""
    assays = site_backgrounds.assays_of(data.plasma()) or ["default"]
    models: dict[str, site_backgrounds.StoredModel] = {}
    per_assay: dict[str, dict[str, LocusBackground]] = {}
    for assay in assays:
        stored, changed = site_backgrounds.current_model(
            session, data.patient.site, assay, BACKGROUND_PARAMS, MRD_PARAMS
        )
        if changed:
            _request_recompute_of_mrd_patients(
                session,
                stored,
                exclude=data.patient.id,
                reason=f"the background model of assay {assay} was refitted",
            )
        controls = site_backgrounds.locus_controls(
            session, stored.scope, assay, data.patient.id, read
        )
        models[assay] = stored
        per_assay[assay] = locus_backgrounds(
            stored.model, controls.shared, BACKGROUND_PARAMS, loci=keys, own_normals=controls.own
        )
    return models, per_assay


def _request_recompute_of_mrd_patients(
    session: Session, stored: site_backgrounds.StoredModel, *, exclude: int, reason: str
) -> int:
    """The assay's model changed materially: the patients whose MRD calls rest on it (a
    tracked set and plasma of that assay) are recomputed, so their calls use it too."""
    query = (
        select(Patient)
        .join(Sample, Sample.patient_pk == Patient.id)
        .where(
            Sample.assay == stored.assay,
            Sample.sample_type == "plasma",
            Patient.id != exclude,
            exists().where(TrackedVariant.patient_pk == Patient.id, TrackedVariant.kept.is_(True)),
        )
        .distinct()
        .order_by(Patient.id)
    )
    if stored.scope != site_backgrounds.ALL_SITES:
        query = query.where(Patient.site == stored.scope)
    patients = session.scalars(query).all()
    for patient in patients:
        request_recompute(session, patient, reason)
    return len(patients)


# --- MRD ----------------------------------------------------------------------------------------


HAPLOID_GENOMES_PER_NG = 303  # 3.3 pg per haploid genome (domain-anchors §4.5)


def _molecules_per_ml(call: MrdCall, sample: Sample) -> float | None:
    """Mean mutant molecules per mL of plasma (Signatera's MTM/mL structure, domain-anchors
    §4.6): background-subtracted mutant fraction x cfDNA ng/mL x 303 genomes/ng, reads and
    background over the same (retained) loci. Needs the sample's cfDNA concentration."""
    if not sample.cfdna_ng_per_ml or not call.informative_reads:
        return None
    excess = max(0.0, call.mutant_reads - call.background_reads) / call.informative_reads
    return excess * sample.cfdna_ng_per_ml * HAPLOID_GENOMES_PER_NG


def _call_from_json(stored: dict[str, Any]) -> MrdCall:
    fields = {f: stored[f] for f in MrdCall.__dataclass_fields__}
    fields["call"] = MrdStatus(fields["call"])
    for name in ("dropped_loci", "excluded_loci", "flags"):
        fields[name] = tuple(fields[name])
    return MrdCall(**fields)


def _reusable(previous: dict[str, Any] | None) -> dict[str, tuple[str, MrdCall]]:
    """The calls of the previous body by sample, to be reused when their inputs are unchanged
    (a body of another rule version is not reused)."""
    if not previous or previous.get("rule_version") != MRD_PARAMS.version:
        return {}
    out = {}
    for stored in previous.get("calls", []):
        try:
            out[stored["sample_id"]] = (stored["fingerprint"], _call_from_json(stored))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def _tissue_purity(data: _Patient, tracked: Sequence[TrackedVariant]) -> float | None:
    sources = {t.source_sample_pk for t in tracked if t.source_sample_pk is not None}
    purities = [
        s.tumor_purity for s in data.samples if s.id in sources and s.tumor_purity is not None
    ]
    return purities[-1] if purities else None


def _mrd(data: _Patient, evidence: _Evidence, previous: dict[str, Any] | None) -> dict[str, Any]:
    """The patient's MRD series (``genomics.mrd.call_series``) as the stored /mrd body; a
    call whose inputs did not change since the previous computation is reused."""
    tracked = evidence.tracked
    surgeries = data.event_dates("surgery")
    relapses = data.event_dates("clinical_relapse")
    body: dict[str, Any] = {
        "patient_id": data.patient.patient_id,
        "status": NOT_APPLICABLE,
        "reason": None,
        "surgery_date": surgeries[0].isoformat() if surgeries else None,
        "calls": [],
        "molecular_relapse_date": None,
        "relapse_confirmed_date": None,
        "clinical_relapse_date": relapses[0].isoformat() if relapses else None,
        "lead_time_days": None,
        "loci_tracked": len(tracked),
        "rule_version": MRD_PARAMS.version,
        "background_version": BACKGROUND_PARAMS.version,
        "background_models": site_backgrounds.describe_models(evidence.models),
        "specificity": MRD_PARAMS.specificity,
        "threshold_specificity": MRD_PARAMS.threshold_specificity,
        "confirmation_specificity": MRD_PARAMS.confirmation_specificity,
        "min_informative_reads": MRD_PARAMS.min_informative_reads,
        "computed_at": utcnow().isoformat(),
    }
    if not surgeries:
        body["reason"] = "no surgery event recorded: MRD is called on post-surgery plasma"
        return _validated(body)
    if not tracked:
        body["reason"] = "no tracked variants: post a tumour tissue VCF or PUT tracked-variants"
        return _validated(body)
    weights = evidence.weights
    plasma = data.plasma()
    draws = [
        PlasmaDraw(
            sample_id=sample.sample_id,
            collection_date=sample.collection_date,
            counts={
                key: (row.alt_reads, row.depth)
                for key in weights
                if (row := data.rows_by_sample.get(sample.id, {}).get(key)) is not None
                and row.depth
                and row.alt_reads is not None
            },
            assay=sample.assay,
        )
        for sample in plasma
    ]
    series = call_series(
        draws,
        weights,
        evidence.backgrounds,
        surgery_dates=surgeries,
        clinical_relapse_date=relapses[0] if relapses else None,
        params=MRD_PARAMS,
        background_params=BACKGROUND_PARAMS,
        seed=patient_seed(data.patient.site, data.patient.patient_id),
        reuse=_reusable(previous),
    )
    by_id = {s.sample_id: s for s in plasma}
    for drawn in series.calls:
        body["calls"].append(
            {
                "sample_id": drawn.sample_id,
                "collection_date": drawn.collection_date.isoformat(),
                "assay": drawn.assay,
                **jsonable(drawn.call),
                "status_after": str(drawn.status_after),
                # A locus a file did not report is missing evidence, not zero reads: it is
                # neither used nor counted as informative (loci_tracked stays the tracked set).
                "loci_tracked": len(tracked),
                "loci_reported": drawn.loci_reported,
                "mutant_molecules_per_ml": _molecules_per_ml(drawn.call, by_id[drawn.sample_id]),
                "fingerprint": drawn.fingerprint,
                # the background model the call was made on (kept with the call as issued)
                "background_model": evidence.models[drawn.assay].digest
                if drawn.assay in evidence.models
                else None,
            }
        )
    body["status"] = str(series.status)
    body["reason"] = series.reason
    body["molecular_relapse_date"] = _iso(series.molecular_relapse_date)
    body["relapse_confirmed_date"] = _iso(series.relapse_confirmed_date)
    body["lead_time_days"] = series.lead_time_days
    return _validated(body)


def mrd_body(session: Session, patient: Patient) -> dict[str, Any]:
    """The patient's MRD body computed afresh from the stored data and the stored background
    model (nothing reused, nothing written unless the assay's model is due for a refit): what
    any worker computes for the same data."""
    data = _load(session, patient)
    return _mrd(data, _evidence(session, data), None)


def _iso(value: dt.date | None) -> str | None:
    return value.isoformat() if value else None


def _validated(body: dict[str, Any], contract: type[BaseModel] = MrdBody) -> dict[str, Any]:
    """The body checked against its declared contract (schemas.analyses): what is stored and
    served as bytes is what OpenAPI declares."""
    contract.model_validate(body)
    return body


def _announce_mrd(
    session: Session, patient: Patient, previous: str | None, body: dict[str, Any]
) -> None:
    status = body["status"]
    if status in (previous, NOT_APPLICABLE) or not body["calls"]:
        return
    latest = body["calls"][-1]
    alerts.emit(
        session,
        patient.site,
        "mrd.status_changed",
        {
            "patient_id": patient.patient_id,
            "sample_id": latest["sample_id"],
            "collection_date": latest["collection_date"],
            "previous_status": previous,
            "status": status,
            "molecular_relapse_date": body["molecular_relapse_date"],
            "tumor_fraction": latest["tumor_fraction"],
            "lod95": latest["lod95"],
            "rule_version": body["rule_version"],
        },
    )


# --- serial analyses ----------------------------------------------------------------------------


def _series(
    data: _Patient,
    tracked: Sequence[TrackedVariant],
    backgrounds: dict[str, dict[str, LocusBackground]],
    weights: dict[str, float],
) -> list[LocusSeries]:
    """One series per tracked locus and per monitored-gene variant seen in plasma. At a
    tracked locus the reads are the evidence whatever the caller's FILTER (a force-called low
    VAF is often filtered); elsewhere a non-PASS call is not a detection and is left out. A
    variant that looks inherited is flagged (``longitudinal.germline_suspected``)."""
    tracked_keys = {t.locus_key for t in tracked}
    meta: dict[str, tuple[str | None, str | None]] = {
        t.locus_key: (t.gene, t.protein_change) for t in tracked
    }
    observations: dict[str, list[LocusObservation]] = defaultdict(list)
    normal_vafs: dict[str, list[float]] = defaultdict(list)
    for sample in data.plasma():
        for key, row in data.rows_by_sample.get(sample.id, {}).items():
            if key not in tracked_keys and (not row.in_monitored_gene or not row.passed):
                continue
            if not row.depth or row.alt_reads is None:
                continue
            if key not in meta or meta[key] == (None, None):
                meta[key] = (row.gene, row.protein_change)
            if row.normal_depth and row.normal_alt_reads is not None:
                normal_vafs[key].append(row.normal_alt_reads / row.normal_depth)
            background = backgrounds.get(sample.assay, {}).get(key)
            observations[key].append(
                LocusObservation(
                    sample_id=sample.sample_id,
                    collection_date=sample.collection_date,
                    alt_reads=min(row.alt_reads, row.depth),
                    depth=row.depth,
                    background_error=background.mean if background else BACKGROUND_PARAMS.floor,
                )
            )
    series = [
        LocusSeries(
            key=key,
            gene=meta[key][0],
            protein_change=meta[key][1],
            observations=tuple(obs),
            weight=weights.get(key, MRD_PARAMS.clonal_g),
            germline_suspected=key not in tracked_keys
            and germline_suspected(
                obs,
                gene=meta[key][0],
                protein_change=meta[key][1],
                normal_vafs=normal_vafs[key],
                params=LONGITUDINAL_PARAMS,
            ),
        )
        for key, obs in sorted(observations.items())
    ]
    truncal = tracked_keys or baseline_clone(series, LONGITUDINAL_PARAMS)
    return [replace(locus, truncal=locus.key in truncal) for locus in series]


def _trends(
    data: _Patient,
    series: Sequence[LocusSeries],
    lines: Sequence[TherapyLine],
    mrd: dict[str, Any],
    resistance: dict[str, Any],
) -> dict[str, Any]:
    """The /trends body. One tumour fraction per draw: for a draw with an MRD call it is that
    call's (the issued value: the same number as /mrd), otherwise the same tumour-informed
    estimator on the tracked loci (``tumor_fraction_method`` "tumour_informed") or, for a
    patient without tissue, the estimate from the clone seen at baseline ("panel_vaf")."""
    body: dict[str, Any] = {
        "patient_id": data.patient.patient_id,
        "samples": [],
        "variants": [],
        "responses": [],
        "therapy_lines": jsonable(lines),
        "events": [
            {
                "type": e.type,
                "date": e.event_date.isoformat(),
                "drug": e.drug,
                "drug_class": e.drug_class,
            }
            for e in data.events
        ],
        "params_version": LONGITUDINAL_PARAMS.version,
        "computed_at": utcnow().isoformat(),
    }
    meta = {s.sample_id: s for s in data.plasma()}
    tracked_keys = {t.locus_key for t in data.tracked if t.kept}
    if not series:
        body["samples"] = [
            {
                "sample_id": s.sample_id,
                "collection_date": s.collection_date.isoformat(),
                "tumor_fraction": None,
            }
            for s in data.plasma()
        ]
        return _validated(body, TrendsBody)
    calls = {c["sample_id"]: c for c in mrd.get("calls", [])}
    method = "tumour_informed" if tracked_keys else "panel_vaf"
    fractions = [
        _one_fraction(tf, calls.get(tf.sample_id))
        for tf in tumour_fractions(series, LONGITUDINAL_PARAMS)
    ]
    emergences = [
        (
            dt.date.fromisoformat(e["first_detected_date"]),
            f"{e['gene']} {e['protein_change']}",
            e["drug_class"],
        )
        for e in resistance.get("events", [])
        if e.get("status") in ("emerged", "rising", "present_at_start")
    ]
    report = longitudinal_report(
        series,
        lines,
        LONGITUDINAL_PARAMS,
        (_seed(data.patient),),
        fractions=fractions,
        emergences=emergences,
        cache=_RCCF_CACHE,
    )
    math_by_sample = {m.sample_id: m for m in report.math_scores}
    for tf in report.tumour_fractions:
        sample = meta.get(tf.sample_id)
        heterogeneity = math_by_sample.get(tf.sample_id)
        body["samples"].append(
            {
                "sample_id": tf.sample_id,
                "collection_date": tf.collection_date.isoformat(),
                "tumor_fraction": tf.estimate,
                "tumor_fraction_ci": [tf.lower, tf.upper],
                "tumor_fraction_method": method,
                "tumor_fraction_source": "mrd_call" if tf.sample_id in calls else "trends",
                "tumor_fraction_median_2vaf": tf.median_2vaf,
                "detected": tf.detected,
                "p_value": tf.p_value,
                "lod95": tf.lod95 if np.isfinite(tf.lod95) else None,
                "mutant_reads": tf.mutant_reads,
                "informative_reads": tf.informative_reads,
                "math_score": heterogeneity.math if heterogeneity else None,
                "math_variants": heterogeneity.n_detected if heterogeneity else 0,
                "plasma_ml": sample.plasma_ml if sample else None,
                "cfdna_ng_per_ml": sample.cfdna_ng_per_ml if sample else None,
            }
        )
    rccf: dict[tuple[str, str], Any] = {(r.key, r.sample_id): r for r in report.relative_ccfs}
    for locus in series:
        points = []
        for obs in locus.ordered():
            ratio = rccf.get((locus.key, obs.sample_id))
            points.append(
                {
                    "sample_id": obs.sample_id,
                    "collection_date": obs.collection_date.isoformat(),
                    "alt_reads": obs.alt_reads,
                    "depth": obs.depth,
                    "vaf": obs.vaf,
                    "rccf": ratio.rccf if ratio else None,
                    "rccf_ci": [ratio.lower, ratio.upper] if ratio and ratio.evaluable else None,
                    "background_error": obs.background_error,
                }
            )
        body["variants"].append(
            {
                "locus_key": locus.key,
                "gene": locus.gene,
                "protein_change": locus.protein_change,
                "tracked": locus.key in tracked_keys,
                # The tumour-fraction reference: the tracked set, or without one the clone
                # seen at baseline.
                "truncal": locus.truncal,
                "germline_suspected": locus.germline_suspected,
                "points": points,
            }
        )
    body["responses"] = jsonable(report.responses)
    return _validated(body, TrendsBody)


class _LruCache:
    """The rCCFs of the draws this worker process computed, the least recently used dropped
    past ``size`` (``longitudinal.draw_relative_ccfs`` keys them by what they depend on)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[str, tuple[RelativeCCF, ...]] = OrderedDict()

    def get(self, key: str, /) -> tuple[RelativeCCF, ...] | None:
        value = self.items.get(key)
        if value is not None:
            self.items.move_to_end(key)
        return value

    def __setitem__(self, key: str, value: tuple[RelativeCCF, ...], /) -> None:
        self.items[key] = value
        if len(self.items) > self.size:
            self.items.popitem(last=False)


_RCCF_CACHE = _LruCache(50_000)


def _one_fraction(tf: TumourFraction, call: dict[str, Any] | None) -> TumourFraction:
    """The draw's tumour fraction as its MRD call reports it, when it has one: the same
    estimator (the tracked loci weighted by their allele fraction in tumour DNA) with the
    call's backgrounds and outlier suppression, and the value issued to the oncologist."""
    if call is None or not call.get("informative_reads"):
        return tf
    positive = call["call"] == "POSITIVE"
    lod = call.get("lod95")
    return replace(
        tf,
        estimate=call["tumor_fraction"],
        lower=call["ci_low"],
        upper=call["ci_high"],
        detected=positive,
        p_value=call["p_value"] if call.get("p_value") is not None else tf.p_value,
        lod95=lod if lod is not None else tf.lod95,
        mutant_reads=call["mutant_reads"],
        informative_reads=call["informative_reads"],
    )


def _series_of_trends(body: dict[str, Any]) -> list[LocusSeries]:
    """The per-variant series a stored /trends body was computed from."""
    return [
        LocusSeries(
            key=variant["locus_key"],
            gene=variant["gene"],
            protein_change=variant["protein_change"],
            observations=tuple(
                LocusObservation(
                    sample_id=point["sample_id"],
                    collection_date=dt.date.fromisoformat(point["collection_date"]),
                    alt_reads=point["alt_reads"],
                    depth=point["depth"],
                    background_error=point.get("background_error") or BACKGROUND_PARAMS.floor,
                )
                for point in variant["points"]
            ),
            truncal=variant["truncal"],
            germline_suspected=variant.get("germline_suspected", False),
        )
        for variant in body.get("variants", [])
    ]


def _clones(
    patient: Patient, series: Sequence[LocusSeries], rng: np.random.Generator
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "patient_id": patient.patient_id,
        "clones": [],
        "params_version": CLONE_PARAMS.version,
        "computed_at": utcnow().isoformat(),
    }
    series = clonal_candidates(series, LONGITUDINAL_PARAMS)
    if not series:
        body["error"] = "no somatic variant detected in plasma: no clone to fit"
        return _validated(body, ClonesBody)
    try:
        fit = fit_clones(series, CLONE_PARAMS, rng, longitudinal_params=LONGITUDINAL_PARAMS)
    except InvalidInput as exc:
        body["error"] = exc.detail
        return _validated(body, ClonesBody)
    names = {s.key: (s.gene, s.protein_change) for s in series}
    body.update({"method": fit.method, "n_clones": fit.n_clones, "bic": fit.bic})
    # The heterogeneity index per sample: MATH and the number of clones present in it.
    body["samples"] = jsonable(sample_heterogeneity(math_scores(series, LONGITUDINAL_PARAMS), fit))
    for clone in fit.clones:
        body["clones"].append(
            {
                "clone_id": clone.clone_id,
                "status": clone.label,
                "label_p_value": clone.label_p_value,
                "label_fold_change": clone.label_fold_change,
                "members": [
                    {"locus_key": k, "gene": names[k][0], "protein_change": names[k][1]}
                    for k in clone.member_keys
                ],
                "ccf_series": jsonable(clone.draws),
            }
        )
    body["assignments"] = jsonable(fit.assignments)
    return _validated(body, ClonesBody)


# --- storage ------------------------------------------------------------------------------------


def _stored_status(session: Session, patient_pk: int, kind: str) -> str | None:
    return session.scalar(
        select(PatientAnalysis.status).where(
            PatientAnalysis.patient_pk == patient_pk, PatientAnalysis.kind == kind
        )
    )


def _store(
    session: Session, patient_pk: int, kind: str, body: dict[str, Any], status: str | None
) -> None:
    row = session.scalar(
        select(PatientAnalysis).where(
            PatientAnalysis.patient_pk == patient_pk, PatientAnalysis.kind == kind
        )
    )
    text = dumps(body)
    if row is None:
        session.add(
            PatientAnalysis(
                patient_pk=patient_pk, kind=kind, status=status, body=text, computed_at=utcnow()
            )
        )
    else:
        row.body, row.status, row.computed_at = text, status, utcnow()


def stored_body(session: Session, patient_pk: int, kind: str) -> str | None:
    return session.scalar(
        select(PatientAnalysis.body).where(
            PatientAnalysis.patient_pk == patient_pk, PatientAnalysis.kind == kind
        )
    )
