"""The `ctdna` command: migrate, serve, worker, beat, keys, demo; the HTTP client commands
(submit, patients, patient, export) live in services/clientcli.py."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from services.cli_output import Column, FormatOption, emit, resolve
from services.clientcli import register as register_client_commands
from services.config import get_settings

KEY_COLUMNS = (
    Column("key_id", "key"),
    Column("site", "site"),
    Column("scopes", "scopes"),
    Column("prefix", "prefix"),
    Column("state", "state"),
    Column("created_at", "created (UTC)", "date"),
)

app = typer.Typer(help="ctDNA monitoring service", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (only their hash is stored)", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
out = Console()
err = Console(stderr=True)


@app.command()
def migrate(
    app_role: Annotated[
        str | None,
        typer.Option(
            help="PostgreSQL role the service connects as: granted rows, never tables "
            "(default CTDNA_DATABASE_APP_ROLE)"
        ),
    ] = None,
) -> None:
    """Apply the Alembic migrations to the configured database (as the tables' owner), then
    grant the application role what the service needs."""
    from services.migrations import grant_app_role, upgrade

    settings = get_settings()
    if settings.embedded_database:
        settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.sqlalchemy_url)
    err.print(f"database at head: {_redact(settings.sqlalchemy_url)}")
    role = app_role or settings.database_app_role
    if role and not settings.embedded_database:
        grant_app_role(settings.sqlalchemy_url, role)
        err.print(f"granted role {role!r} rows, not tables (the audit trail: insert and read)")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    workers: Annotated[int, typer.Option(help="API processes")] = 1,
    with_worker: Annotated[
        bool | None,
        typer.Option(
            "--with-worker/--no-worker",
            help="Also start a Celery worker (default: yes on the embedded broker)",
        ),
    ] = None,
    demo: Annotated[
        bool,
        typer.Option(
            "--demo/--no-demo",
            help="On a first run (demo never loaded here, no other site's patients) load the "
            "demo cohort in the background, after any real upload; always print the sign-in "
            "address and a key of the demo site",
        ),
    ] = False,
) -> None:
    """Run the HTTP API (and, on the embedded default, a worker process beside it)."""
    import uvicorn

    settings = get_settings()
    if settings.embedded_database:
        migrate()
    start_worker = settings.embedded_broker if with_worker is None else with_worker
    metrics_dir = _multiprocess_metrics_dir(settings.resolved_data_dir) if workers > 1 else None
    children: list[subprocess.Popen[bytes]] = []
    if start_worker:
        children.append(_spawn_worker(beat=True))
    if demo:
        loader = _start_demo_loader(settings.resolved_data_dir)
        if loader is not None:
            children.append(loader)
        threading.Thread(
            target=_announce,
            args=(host, port, _demo_key(settings.resolved_data_dir), loader),
            daemon=True,
        ).start()
    # uvicorn stops on SIGTERM, then raises it again: end by SystemExit, not by the default
    # action, so that the `finally` below stops the worker and the demo loader as well.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        uvicorn.run(
            "services.api.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=settings.log_level.lower(),
            access_log=False,
            # the request head is capped (431); h11's own cap is the same, should it be used
            http="services.api.protocol:BoundedHttpToolsProtocol",
            h11_max_incomplete_event_size=settings.max_header_bytes,
            proxy_headers=True,
            forwarded_allow_ips=settings.forwarded_allow_ips,
        )
    finally:
        for child in reversed(children):
            _stop_child(child)
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


DEMO_SITE = "demo"


def _demo_key(data_dir: Path) -> str:
    """A key of the demo site to sign in with, the same on every `serve --demo` of this data
    folder: kept in DATA_DIR/demo-key (readable by its owner only; the folder holds the
    database anyway), made anew if it was revoked."""
    from services.auth.service import authenticate, create_key
    from services.db import unit_of_work

    path = data_dir / "demo-key"
    if path.is_file():
        secret = path.read_text().strip()
        with unit_of_work() as session:
            if authenticate(session, secret) is not None:
                return secret
    with unit_of_work() as session:
        _, secret = create_key(
            session, site=DEMO_SITE, scopes=frozenset({"read", "ingest", "admin"})
        )
    path.touch(mode=0o600)
    path.write_text(secret + "\n")
    return secret


def _start_demo_loader(data_dir: Path) -> subprocess.Popen[bytes] | None:
    """`ctdna demo` in a process of its own (of lower processor priority), its output in
    DATA_DIR/demo.log, when the demo was never loaded here and no other site has patients
    (a load that was interrupted goes on where it stopped: loading is idempotent). None when
    there is nothing to load."""
    from sqlalchemy import select

    from services.db import unit_of_work
    from services.patients.models import Patient

    done = data_dir / "demo-loaded"
    if done.exists():
        return None
    with unit_of_work() as session:
        if session.scalar(select(Patient.id).where(Patient.site != DEMO_SITE).limit(1)):
            return None
    log = (data_dir / "demo.log").open("ab")
    loader = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "demo", "--site", DEMO_SITE, "--no-key"],
        env=os.environ.copy(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()

    def mark_done() -> None:
        if loader.wait() == 0:
            done.touch()

    threading.Thread(target=mark_done, daemon=True).start()
    return loader


def _announce(host: str, port: int, key: str, loader: subprocess.Popen[bytes] | None) -> None:
    """Once the API answers: where to sign in, and with which key (printed last, so it is
    not lost among the start-up lines)."""
    import time

    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((shown, port), timeout=1):
                break
        except OSError:
            time.sleep(0.2)
    base = f"http://{shown}:{port}"
    lines = [
        "",
        f"ctDNA monitoring is running: open {base}/ui/patients",
        f"sign in with this key (site {DEMO_SITE!r}; also for the API and `ctdna` as "
        "CTDNA_API_KEY):",
        f"    {key}",
    ]
    if loader is not None:
        lines.append(
            "the demo cohort is loading in the background (under a minute; patients appear "
            "as they load, and your own uploads go first)"
        )
    lines.append(f"API documentation: {base}/docs · stop with Ctrl-C")
    print("\n".join(lines) + "\n", flush=True)


def _multiprocess_metrics_dir(data_dir: Path) -> Path | None:
    """Several API processes behind one port: each writes its request metrics to a fresh
    directory that every scrape sums (services/api/metrics.py). Set before the worker
    processes start; an operator's own PROMETHEUS_MULTIPROC_DIR is kept as it is."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    path = data_dir / "prometheus" / str(os.getpid())
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path


WORKER_QUEUES = ("ingest", "webhooks")


@app.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(help="Worker processes (ingest)")] = None,
    beat: Annotated[
        bool | None,
        typer.Option(
            "--beat/--no-beat",
            help="Embed the periodic sweep (default: yes on the embedded broker)",
        ),
    ] = None,
    queues: Annotated[
        str,
        typer.Option(
            help="ingest (samples, analyses, the sweep), webhooks (deliveries, in threads), or "
            "both: then the webhooks run in a second process beside this one"
        ),
    ] = "ingest,webhooks",
    loglevel: Annotated[str, typer.Option()] = "INFO",
    quiet: Annotated[bool, typer.Option(help="No start-up banner")] = False,
) -> None:
    """Run the Celery workers: ingest, recompute and sweep tasks, and webhook deliveries."""
    from services.jobs.broker import QUEUE, WEBHOOK_QUEUE
    from workers.celery_app import app as celery_app

    settings = get_settings()
    # the beat's schedule file and the embedded broker live there: a missing folder must not
    # silently stop the sweep
    settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)
    chosen = {q.strip() for q in queues.split(",") if q.strip()}
    if not chosen or chosen - set(WORKER_QUEUES):
        err.print(f"[red]--queues takes {' and/or '.join(WORKER_QUEUES)}[/red]")
        raise typer.Exit(2)
    common = [f"--loglevel={loglevel}", "--without-gossip", "--without-mingle"]
    if chosen == {"webhooks"}:
        celery_app.worker_main(
            [
                "worker",
                *common,
                "-Q",
                WEBHOOK_QUEUE,
                "--pool=threads",
                f"--concurrency={settings.webhook_concurrency}",
                f"--hostname=webhooks-{os.getpid()}@%h",
            ]
        )
        return
    argv = [
        *(["--quiet"] if quiet else []),
        "worker",
        *common,
        "-Q",
        QUEUE,
        f"--concurrency={concurrency or settings.worker_concurrency}",
        f"--hostname=ingest-{os.getpid()}@%h",
    ]
    if settings.embedded_broker if beat is None else beat:
        argv.append("--beat")
        argv.append(f"--schedule={settings.resolved_data_dir / 'celerybeat-schedule'}")
    webhooks = None
    if "webhooks" in chosen:
        webhooks = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "worker", "--queues", "webhooks"]
            + [f"--loglevel={loglevel}"],
            env=os.environ.copy(),
        )
    try:
        celery_app.worker_main(argv)
    finally:
        if webhooks is not None:
            _stop_child(webhooks)


@app.command()
def beat(loglevel: Annotated[str, typer.Option()] = "INFO") -> None:
    """Run the periodic scheduler alone (production: one beat per deployment)."""
    from workers.celery_app import app as celery_app

    settings = get_settings()
    settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)
    celery_app.start(["beat", f"--loglevel={loglevel}"])


def _stop_child(child: subprocess.Popen[bytes]) -> None:
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(timeout=20)
    except subprocess.TimeoutExpired:
        child.kill()


@keys_app.command("create")
def keys_create(
    site: Annotated[str, typer.Option(help="Site (tenant) the key belongs to")],
    scopes: Annotated[str, typer.Option(help="Comma-separated: ingest,read,admin")] = "ingest,read",
) -> None:
    """Create a key; prints it once, alone on the last line."""
    from services.auth.service import create_key, parse_scopes
    from services.db import unit_of_work
    from services.errors import DomainError

    try:
        scope_set = parse_scopes(scopes)
        with unit_of_work() as session:
            key, secret = create_key(session, site=site, scopes=scope_set)
            key_id = key.id
    except DomainError as exc:
        err.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(2) from exc
    err.print(
        f"key {key_id} for site {site!r} with scopes {sorted(scope_set)}; it is shown only now:"
    )
    print(secret, flush=True)


@keys_app.command("list")
def keys_list(site: Annotated[str | None, typer.Option()] = None, fmt: FormatOption = None) -> None:
    """List keys (ids, sites, scopes, state; never secrets)."""
    from services.auth.service import list_keys
    from services.db import unit_of_work

    chosen = resolve(fmt, out)
    with unit_of_work() as session:
        rows = [
            {
                "key_id": key.id,
                "site": key.site,
                "scopes": key.scopes,
                "prefix": f"{key.prefix}…",
                "state": "revoked" if key.revoked_at else "active",
                "created_at": key.created_at.strftime("%Y-%m-%d %H:%M"),
            }
            for key in list_keys(session, site)
        ]
    emit(out, chosen, KEY_COLUMNS, rows, title=f"{len(rows)} key{'' if len(rows) == 1 else 's'}")


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke a key by id."""
    from services.auth.service import revoke_key
    from services.db import unit_of_work

    with unit_of_work() as session:
        if not revoke_key(session, key_id):
            err.print(f"[red]no active key {key_id}[/red]")
            raise typer.Exit(1)
    err.print(f"revoked {key_id}")


@keys_app.command("rotate")
def keys_rotate(key_id: str) -> None:
    """Replace a key by a new one (same site and scopes); prints the new key alone on the last
    line. The old key stops working at once."""
    from services.auth.service import rotate_key
    from services.db import unit_of_work
    from services.errors import DomainError

    try:
        with unit_of_work() as session:
            key, secret = rotate_key(session, key_id)
            new_id = key.id
    except DomainError as exc:
        err.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(1) from exc
    err.print(f"key {key_id} revoked; its replacement {new_id} is shown only now:")
    print(secret, flush=True)


@app.command()
def demo(
    site: Annotated[str, typer.Option(help="Site the demo cohort belongs to")] = "demo",
    patients: Annotated[int, typer.Option(help="Simulated patients")] = 12,
    draws: Annotated[int, typer.Option(help="Plasma draws per patient")] = 6,
    seed: Annotated[int, typer.Option()] = 2026,
    key: Annotated[bool, typer.Option("--key/--no-key", help="Print a new key of the site")] = True,
) -> None:
    """Load a simulated cohort (real VCF files through the ingest code) and print a key.

    Real uploads go first: the demo's work is never queued for the workers, and the loader
    waits while another patient's sample is queued."""
    from rich.progress import Progress

    from services.auth.service import create_key
    from services.db import unit_of_work
    from services.demo import demo as load_demo

    os.nice(10)  # demo work yields the processor to real work (uploads, page reads)
    settings = get_settings()
    if settings.embedded_database:
        migrate()
    with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task("loading demo samples", total=None)
        loaded = load_demo(
            site,
            patients_n=patients,
            draws=draws,
            seed=seed,
            on_sample=lambda *_: progress.advance(task),
        )
    if not key:
        err.print(f"loaded {loaded} samples for site {site!r}")
        return
    with unit_of_work() as session:
        _, secret = create_key(session, site=site, scopes=frozenset({"read", "ingest", "admin"}))
    err.print(f"loaded {loaded} samples for site {site!r}; open /ui/patients and sign in with:")
    print(secret, flush=True)


@app.command()
def simulate(
    out: Annotated[Path, typer.Argument(help="Folder for the VCFs, manifest.csv and events.csv")],
    patients: Annotated[int, typer.Option()] = 20,
    draws: Annotated[int, typer.Option()] = 6,
    seed: Annotated[int, typer.Option()] = 1,
    prefix: Annotated[
        str,
        typer.Option(
            help="Put before every patient and sample id (the demo cohort of `make run` "
            "already uses the bare SIM-/MET- ids)"
        ),
    ] = "",
) -> None:
    """Write a simulated cohort with known truth: tissue and plasma VCFs, manifest.csv, the
    clinical events (surgery, therapy lines, relapse) in events.csv, and truth.json;
    `ctdna submit OUT` posts it all."""
    from services.demo import write_demo, write_manifest

    cohort = write_demo(out, patients_n=patients, draws=draws, seed=seed, prefix=prefix)
    manifest = write_manifest(out, cohort)
    events = sum(len(p.events) for p in cohort)
    err.print(
        f"{sum(len(p.samples) for p in cohort)} VCFs and {events} clinical events for "
        f"{len(cohort)} patients in {out}"
    )
    print(manifest)


@app.command()
def bench(
    sections: Annotated[
        str,
        typer.Option(
            help="parse,memory,latency,throughput,reads (the service) and mrd,resistance (the "
            "science against simulated truth: benchmarks/results_mrd.json, "
            "results_resistance.json)"
        ),
    ] = "parse,memory,latency,throughput,reads",
    parse_records: Annotated[int, typer.Option(help="Records of the large VCF.gz")] = 2_000_000,
    latency_uploads: Annotated[int, typer.Option(help="Sequential panel uploads")] = 50,
    throughput_samples: Annotated[int, typer.Option(help="Panel samples (issue: 1000)")] = 300,
    read_patients: Annotated[int, typer.Option(help="Bulk patients (× 30 samples)")] = 10_000,
    wrk_seconds: Annotated[int, typer.Option(help="Seconds per wrk run")] = 10,
    api_workers: Annotated[int | None, typer.Option(help="API processes (default nproc)")] = None,
    tissue: Annotated[bool, typer.Option(help="Also measure a tissue ingest's memory")] = True,
    output: Annotated[Path | None, typer.Option(help="Default benchmarks/results.json")] = None,
) -> None:
    """Benchmark ingest, throughput and reads against fresh PostgreSQL/Redis databases on
    127.0.0.1 (README, "Benchmarks"); prints a table and writes results.json."""
    from benchmarks.run import SECTIONS, BenchOptions, run

    chosen = sections.split(",")
    if "mrd" in chosen:
        from benchmarks import mrd

        mrd.main([])
    if "resistance" in chosen:
        from benchmarks import resistance

        resistance.main([])
    if not set(chosen) & set(SECTIONS):
        return
    options = BenchOptions(
        sections=tuple(s for s in SECTIONS if s in chosen),
        parse_records=parse_records,
        latency_uploads=latency_uploads,
        throughput_samples=throughput_samples,
        read_patients=read_patients,
        wrk_seconds=wrk_seconds,
        memory_tissue=tissue,
    )
    options.api_workers = api_workers or options.api_workers
    options.output = output or options.output
    run(options, Console())


@app.command("schemas")
def export_schemas(
    out: Annotated[Path, typer.Argument(help="Folder for the JSON Schema files")] = Path(
        "schemas/json"
    ),
) -> None:
    """Export the JSON Schema of every versioned webhook payload."""
    import json

    from schemas.webhooks import json_schemas

    out.mkdir(parents=True, exist_ok=True)
    for name, schema in json_schemas().items():
        (out / name).write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        print(out / name)


def _spawn_worker(*, beat: bool) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "services.cli", "worker", "--quiet"]
    argv.append("--beat" if beat else "--no-beat")
    return subprocess.Popen(argv, env=os.environ.copy())


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


register_client_commands(app)  # submit, patients, patient, export: HTTP clients of the API

if __name__ == "__main__":
    app()
