"""The ingest of one stored variant file, run by the `samples.ingest` task.

Three steps, each its own transaction so that a crash at any point leaves a consistent state:
claim the job (lease), read the file outside any transaction (the kept calls are spooled to a
temporary file, so memory does not grow with them; at the tracked loci the fragments counted
in the sample's BAM/CRAM, when it has one, replace the caller's counts), then replace the
sample's variant rows in batches and finish the job atomically. Running it twice stores
nothing twice."""

from __future__ import annotations

import pickle
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog
from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.alerts import service as alerts
from services.analysis import service as analysis
from services.config import get_settings
from services.db import unit_of_work, utcnow
from services.errors import InvalidInput, VcfError
from services.genomics.annotate import hotspot_for
from services.genomics.pileup import PileupCounts, count_alleles
from services.genomics.regions import gene_at
from services.genomics.types import Locus, VariantCall
from services.genomics.vcf import open_vcf
from services.jobs import service as jobs
from services.jobs.models import Job
from services.patients.models import Patient
from services.samples.models import Sample
from services.samples.storage import path_for
from services.variants.models import TrackedVariant, Variant

log = structlog.get_logger(__name__)


def run(job_id: str) -> str:
    """Process one ingest job; returns the job's final status (or 'skipped')."""
    started = time.perf_counter()
    with unit_of_work() as session:
        if not jobs.claim(session, job_id):
            log.info("ingest.skip_not_claimable", job_id=job_id)
            return "skipped"
        job = session.get(Job, job_id)
        assert job is not None and job.sample_pk is not None
        attempt = job.attempts
        sample = session.get(Sample, job.sample_pk)
        assert sample is not None
        tracked = _tracked_loci(session, sample)
        request = _ReadRequest(sample, tracked)

    log.info("ingest.start", job_id=job_id, sample_id=request.sample_id, attempt=attempt)
    jobs.report_progress(f"reading the header of {request.file_name}")
    claimed = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ctdna-ingest-") as spool_dir:
        try:
            result = request.read(Path(spool_dir))
        except VcfError as exc:
            with unit_of_work() as session:
                _fail(session, job_id, attempt, exc.detail)
            log.info("ingest.failed", job_id=job_id, error=exc.detail)
            return "failed"

        read = time.perf_counter()
        jobs.report_progress(f"storing the {result.calls} rows of {request.file_name}")
        with unit_of_work() as session:
            if not _still_ours(session, job_id, attempt):
                log.warning("ingest.lost_lease", job_id=job_id)
                return "skipped"
            analysis_s = _store(session, job_id, result)
    # Where the time goes (the benchmark sums these): database before and after the read,
    # the read itself, and the patient's analyses (part of the store transaction).
    log.info(
        "ingest.succeeded",
        job_id=job_id,
        variants=result.calls,
        claim_s=round(claimed - started, 4),
        read_s=round(read - claimed, 4),
        store_s=round(time.perf_counter() - read, 4),
        analysis_s=round(analysis_s, 4),
    )
    return "succeeded"


def fail_unexpected(job_id: str, error: BaseException) -> None:
    """Record a failure nobody planned for (a bug), so the job does not hang in 'running'."""
    jobs.fail(
        job_id,
        f"internal error ({type(error).__name__}); the operators have the details in the "
        "worker log",
        failed,
    )


def fail_stopped(job_id: str, seconds: float) -> None:
    """The task ran into its time limit: fail the job with what it was doing."""
    with unit_of_work() as session:
        job = session.get(Job, job_id)
        where = jobs.doing(job) if job is not None else "starting"
    jobs.fail(job_id, f"stopped after the {seconds:g}-second time limit while {where}", failed)


class _ReadRequest:
    """Everything read_vcf (and the pileup of an alignment) needs, copied out of the ORM
    before the transaction closes."""

    def __init__(self, sample: Sample, tracked: frozenset[Locus]) -> None:
        settings = get_settings()
        self.sample_id = sample.sample_id
        self.path: Path = path_for(settings.uploads_dir, sample.file_sha256)
        self.file_name = sample.file_name
        self.sample_type = sample.sample_type
        self.genome_build = sample.genome_build
        self.tumor_sample = sample.tumor_sample
        self.normal_sample = sample.normal_sample
        self.tracked = tracked
        self.reference_fasta = settings.reference_fasta
        self.limits = {
            "max_decompressed_bytes": settings.max_decompressed_bytes,
            "max_sample_columns": settings.max_sample_columns,
            "max_line_bytes": settings.max_line_bytes,
            "max_records": settings.max_records,
        }
        # A tissue sample proposes the tracked set from its calls; its reads are not counted.
        self.alignment = (
            _Alignment.of(sample, settings.uploads_dir) if sample.sample_type != "tissue" else None
        )

    def read(self, spool_dir: Path) -> _Read:
        """Read the file outside any transaction, spooling the kept calls to `spool_dir` as
        batches of rows, so that memory does not grow with the number of calls kept."""
        if not self.path.exists():
            raise VcfError(self.file_name, "the stored upload is missing from the data directory")
        counted = self._count_alignment(spool_dir)
        spool = spool_dir / "rows.pickle"
        calls = 0
        reported: set[str] = set()
        with (
            open_vcf(
                self.path,
                display_name=self.file_name,
                sample_type=self.sample_type,  # type: ignore[arg-type]
                genome_build=self.genome_build,  # type: ignore[arg-type]
                tumor_sample=self.tumor_sample,
                normal_sample=self.normal_sample,
                tracked=self.tracked,
                reference_fasta=self.reference_fasta,
                **self.limits,
            ) as stream,
            spool.open("wb") as out,
        ):
            name = self.file_name
            jobs.report_progress(lambda: f"reading {stream.position} of {name}")
            batch: list[dict[str, object]] = []
            for call in stream.calls():
                row = _row(call)
                counts = counted.get(call.locus.key) if call.locus is not None else None
                if counts is not None:
                    # the reads are the raw evidence; the FORMAT counts are the caller's
                    row.update(_counted(counts, passed=call.passed))
                    reported.add(counts.key)
                batch.append(row)
                if len(batch) == _BATCH_ROWS:
                    pickle.dump(batch, out, protocol=pickle.HIGHEST_PROTOCOL)
                    calls, batch = calls + len(batch), []
            # A counted locus the VCF did not report still has evidence: the alignment's.
            loci = {locus.key: locus for locus in self.tracked}
            batch.extend(
                _alignment_row(loci[key], counts)
                for key, counts in sorted(counted.items())
                if key not in reported
            )
            if batch:
                pickle.dump(batch, out, protocol=pickle.HIGHEST_PROTOCOL)
                calls += len(batch)
            return _Read(
                build=stream.build,
                build_source=stream.build_source,
                tumor_sample=stream.tumor_sample,
                normal_sample=stream.normal_sample,
                records_read=stream.records_read,
                alleles_skipped=stream.alleles_skipped,
                calls=calls,
                spool=spool,
            )

    def _count_alignment(self, spool_dir: Path) -> dict[str, PileupCounts]:
        """Fragments at the tracked loci in the sample's alignment, by locus key; loci without
        any read are left out (no reads there is missing evidence, not zero). The file and its
        index are opened even without tracked loci, so that an unreadable alignment fails its
        own upload's job, not a later re-extraction."""
        alignment = self.alignment
        if alignment is None:
            return {}
        if not alignment.path.exists() or not alignment.index_path.exists():
            raise VcfError(
                alignment.name,
                "the stored alignment or its index is missing from the data directory",
            )
        # htslib tells BAM from CRAM, and finds the index, by the file names: the stored
        # files are named by their sha256 only, so the pileup reads them through links.
        link = spool_dir / f"alignment.{alignment.format}"
        index_link = spool_dir / f"{link.name}.{'crai' if alignment.format == 'cram' else 'bai'}"
        link.symlink_to(alignment.path)
        index_link.symlink_to(alignment.index_path)
        try:
            counts = count_alleles(
                link, self.tracked, reference_fasta=self.reference_fasta, index_path=index_link
            )
        except InvalidInput as exc:
            reason = exc.detail.removeprefix(f"{link.name}: ")
        except (OSError, ValueError) as exc:
            # htslib's own error, e.g. a corrupt block that then also fails to close
            reason = f"cannot read the reads: a corrupt or truncated BAM/CRAM ({exc})"
        else:
            return {key: c for key, c in counts.items() if c.depth > 0}
        reason = reason.replace(str(index_link), "alignment_index").replace(
            str(link), alignment.name
        )
        raise VcfError(alignment.name, reason)


@dataclass(frozen=True, slots=True)
class _Alignment:
    """Where a sample's stored BAM/CRAM and its index are, copied out of the ORM."""

    name: str
    format: str
    path: Path
    index_path: Path

    @classmethod
    def of(cls, sample: Sample, uploads_dir: Path) -> _Alignment | None:
        if not (sample.alignment_sha256 and sample.alignment_index_sha256):
            return None
        return cls(
            name=sample.alignment_name or "alignment",
            format=sample.alignment_format or "bam",
            path=path_for(uploads_dir, sample.alignment_sha256),
            index_path=path_for(uploads_dir, sample.alignment_index_sha256),
        )


_BATCH_ROWS = 2_000  # rows per spooled batch and per INSERT


@dataclass(frozen=True, slots=True)
class _Read:
    """What reading a file leaves for the store step: the header's decisions, the counts, and
    the kept calls as row batches in a spool file (our own temporary file, never an upload)."""

    build: str
    build_source: str
    tumor_sample: str | None
    normal_sample: str | None
    records_read: int
    alleles_skipped: int
    calls: int
    spool: Path

    def batches(self) -> Iterator[list[dict[str, object]]]:
        with self.spool.open("rb") as spooled:
            while True:
                try:
                    yield pickle.load(spooled)  # our own spool, written by read() above
                except EOFError:
                    return


def _tracked_loci(session: Session, sample: Sample) -> frozenset[Locus]:
    """The loci read from the sample beyond the monitored genes: its patient's tracked set,
    or for a normal sample every locus its site tracks (a normal plasma is a panel-of-normals
    control for every patient of the site)."""
    query = select(TrackedVariant.locus_key).where(TrackedVariant.kept.is_(True)).distinct()
    if sample.sample_type == "normal":
        query = query.join(Patient, Patient.id == TrackedVariant.patient_pk).where(
            Patient.site == sample.site
        )
    else:
        query = query.where(TrackedVariant.patient_pk == sample.patient_pk)
    return frozenset(Locus.parse(k) for k in session.scalars(query))


def _still_ours(session: Session, job_id: str, attempt: int) -> bool:
    job = session.get(Job, job_id, with_for_update=True)
    return job is not None and job.status == "running" and job.attempts == attempt


def _fail(session: Session, job_id: str, attempt: int, error: str) -> None:
    if not _still_ours(session, job_id, attempt):
        return
    job = session.get(Job, job_id)
    assert job is not None
    jobs.finish(session, job, error=error)
    failed(session, job)


def failed(session: Session, job: Job) -> None:
    """What a failed ingest job leaves (in the transaction that failed it): the sample marked
    failed unless it was processed before, the waiting analyses done, `sample.failed` sent.
    Also for a job failed by the sweep after its workers were lost, or stopped by its time
    limit."""
    error = job.error or "failed"
    sample = session.get(Sample, job.sample_pk)
    assert sample is not None
    patient = session.get(Patient, sample.patient_pk)
    assert patient is not None
    if jobs.awaiting_analysis(session, patient.id):
        # Samples of the patient left their analyses to this ingest: do them now (or leave
        # them to the next queued one).
        _analyse_or_await(session, patient, None)
    # A sample that was processed before keeps its earlier result: only a never-processed
    # sample is marked failed.
    if sample.status == "pending":
        sample.status = "failed"
    alerts.emit(
        session,
        sample.site,
        "sample.failed",
        {
            "patient_id": _patient_id(session, sample),
            "sample_id": sample.sample_id,
            "job_id": job.id,
            "error": error,
        },
    )


def _store(session: Session, job_id: str, result: _Read) -> float:
    """Replace the sample's rows, finish the job, recompute the patient's analyses; returns the
    seconds spent in the analyses."""
    job = session.get(Job, job_id)
    assert job is not None and job.sample_pk is not None
    sample = session.get(Sample, job.sample_pk)
    assert sample is not None
    if sample.status == "retracted":
        # Retracted while its file was read: nothing of it is stored, and the patient's
        # analyses (which the waiting ingests of the patient may need) are done all the same.
        patient = session.get(Patient, sample.patient_pk)
        assert patient is not None
        _analyse_or_await(session, patient, job)
        return 0.0
    session.execute(delete(Variant).where(Variant.sample_pk == sample.id))
    variant_count = _insert_rows(session, sample.id, result)
    sample.status = "processed"
    sample.detected_build = result.build
    sample.build_source = result.build_source
    sample.resolved_tumor_sample = result.tumor_sample
    sample.resolved_normal_sample = result.normal_sample
    sample.records_read = result.records_read
    sample.alleles_skipped = result.alleles_skipped
    sample.variant_count = variant_count
    sample.processed_at = utcnow()
    patient = session.get(Patient, sample.patient_pk)
    assert patient is not None
    session.flush()
    jobs.report_progress(f"computing the analyses of patient {patient.patient_id}")
    analysis_started = time.perf_counter()
    _analyse_or_await(session, patient, job)
    if sample.sample_type == "normal":
        # A new background: the other patients tracking these loci are recomputed with it.
        analysis.request_recompute_of_trackers(
            session, sample, f"new background: normal sample {sample.sample_id}"
        )
    analysis_s = time.perf_counter() - analysis_started
    alerts.emit(
        session,
        sample.site,
        "sample.processed",
        {
            "patient_id": _patient_id(session, sample),
            "sample_id": sample.sample_id,
            "job_id": job.id,
            "sample_type": sample.sample_type,
            "collection_date": sample.collection_date,
            "variant_count": variant_count,
        },
    )
    return analysis_s


def _analyse_or_await(session: Session, patient: Patient, job: Job | None) -> None:
    """Recompute the patient's analyses and finish this job and those that waited for them;
    or, when another sample of the patient already waits for a worker (a burst of uploads,
    the re-extractions of a new tracked set), leave the analyses to that later ingest: N
    samples of a patient in a queue cost one recompute, not N. A job finishes only once the
    analyses include its sample. The patient row is locked first, so a later ingest either
    sees this one waiting or has finished before this one looks."""
    session.execute(select(Patient.id).where(Patient.id == patient.id).with_for_update())
    if jobs.ingest_queued_for_patient(session, patient.id):
        if job is not None:
            jobs.await_analysis(job)
            log.info("ingest.awaiting_analysis", job_id=job.id, patient_pk=patient.id)
        return
    reasons = [job.reason] if job is not None and job.reason else []
    reasons += jobs.reasons_awaiting(session, patient.id)
    analysis.recompute_safely(session, patient, "; ".join(dict.fromkeys(reasons)) or "new data")
    if job is not None:
        jobs.finish(session, job)
    jobs.finish_awaiting(session, patient.id)


def _patient_id(session: Session, sample: Sample) -> str:
    patient = session.get(Patient, sample.patient_pk)
    assert patient is not None
    return patient.patient_id


def _insert_rows(session: Session, sample_pk: int, result: _Read) -> int:
    """Insert the spooled rows batch by batch, in the caller's transaction; returns the rows
    stored. The reader yields an allele once within its window; an unsorted file that repeats
    one further apart keeps the first copy (ON CONFLICT DO NOTHING on the sample's allele)."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(Variant).on_conflict_do_nothing(
        index_elements=["sample_pk", "chrom", "pos", "ref", "alt"]
    )
    for batch in result.batches():
        for row in batch:
            row["sample_pk"] = sample_pk
        session.execute(statement, batch)
    stored = session.scalar(
        select(func.count()).select_from(Variant).where(Variant.sample_pk == sample_pk)
    )
    return int(stored or 0)


def _row(call: VariantCall) -> dict[str, object]:
    """The variants row of a call (without its sample_pk)."""
    return {
        "chrom": call.chrom,
        "pos": call.pos,
        "ref": call.ref,
        "alt": call.alt,
        "build": call.build,
        "locus_key": call.locus.key if call.locus is not None else None,
        "gene": call.gene,
        "protein_change": call.protein_change,
        "filter": call.filter,
        "passed": call.passed,
        "detected": is_detected(call),
        "alt_reads": call.alt_reads,
        "depth": call.depth,
        "vaf": call.vaf,
        "quantitative": call.quantitative,
        "normal_alt_reads": call.normal_alt_reads,
        "normal_depth": call.normal_depth,
        "hotspot": call.hotspot,
        "in_monitored_gene": call.in_monitored_gene,
        "tracked": call.tracked,
        "evidence": "vcf",
    }


def _counted(counts: PileupCounts, *, passed: bool) -> dict[str, object]:
    """The columns a locus' fragment counts replace in its row."""
    return {
        "alt_reads": counts.alt_reads,
        "depth": counts.depth,
        "vaf": counts.alt_reads / counts.depth,
        "detected": passed and counts.alt_reads > 0,
        "quantitative": True,
        "evidence": "alignment",
    }


def _alignment_row(locus: Locus, counts: PileupCounts) -> dict[str, object]:
    """The row of a tracked locus the VCF did not report, from the alignment alone (GRCh38,
    the loci's build; no caller filter applied, so PASS)."""
    hotspot = hotspot_for(locus)
    return {
        "chrom": locus.chrom,
        "pos": locus.pos,
        "ref": locus.ref,
        "alt": locus.alt,
        "build": "GRCh38",
        "locus_key": locus.key,
        "gene": hotspot.gene if hotspot else gene_at("GRCh38", locus.chrom, locus.pos),
        "protein_change": hotspot.protein_change if hotspot else None,
        "filter": "PASS",
        "passed": True,
        "normal_alt_reads": None,
        "normal_depth": None,
        "hotspot": hotspot is not None,
        "in_monitored_gene": gene_at("GRCh38", locus.chrom, locus.pos) is not None,
        "tracked": True,
        **_counted(counts, passed=True),
    }


def is_detected(call: VariantCall) -> bool:
    """A call is detected when the caller passed it and it carries mutant reads (a
    force-called locus with zero alt reads is reported, not detected)."""
    if not call.passed:
        return False
    return call.alt_reads is None or call.alt_reads > 0
