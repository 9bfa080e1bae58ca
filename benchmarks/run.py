"""Orchestration of `ctdna bench`: the sections in order, a rich table against the targets of
issue 10 (BRIEF, "How good is good enough"), and benchmarks/results.json."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
import shutil
import subprocess
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

SECTIONS = ("parse", "memory", "latency", "throughput", "reads")


@dataclass
class BenchOptions:
    sections: tuple[str, ...] = SECTIONS
    parse_records: int = 2_000_000
    parse_repeats: int = 3
    latency_uploads: int = 50
    # The size is 1,000; at the measured ingest rate that alone takes about 10 minutes
    # on 2 cores, so the default is smaller (README, "Benchmarks"): pass --throughput-samples.
    throughput_samples: int = 300
    draws_per_patient: int = 10
    uploaders: int = 4
    worker_concurrency: int = field(default_factory=lambda: os.cpu_count() or 2)
    panel_records: int = 300
    read_patients: int = 10_000
    read_samples: int = 30
    read_variants: int = 10
    one_client_requests: int = 500
    wrk_seconds: int = 10
    wrk_connections: int = 50
    api_workers: int = field(default_factory=lambda: os.cpu_count() or 2)
    memory_tissue: bool = True
    cache_dir: Path = Path("~/.cache/ctdna-bench").expanduser()
    output: Path = Path(__file__).with_name("results.json")
    pg_admin_url: str = "postgresql://postgres@127.0.0.1:5432/test"
    redis_url: str = "redis://127.0.0.1:6379/15"
    keep_database: bool = False


def machine() -> dict[str, Any]:
    def first(cmd: list[str]) -> str | None:
        if shutil.which(cmd[0]) is None:
            return None
        # Some tools (wrk) print their version with a non-zero exit status.
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = (done.stdout or done.stderr).strip().splitlines()
        return lines[0] if lines else None

    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    mem = ""
    if shutil.which("free"):
        out = subprocess.run(["free", "-h"], capture_output=True, text=True, check=False).stdout
        fields = next((ln.split() for ln in out.splitlines() if ln.startswith("Mem:")), [])
        mem = f"{fields[1]} RAM ({fields[-1]} available)" if len(fields) >= 7 else ""
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": mem or None,
        "python": platform.python_version(),
        "bcftools": first(["bcftools", "--version"]),
        "wrk": first(["wrk", "--version"]),
        "redis": first(["redis-server", "--version"]),
        "postgresql": first(["psql", "--version"]),
    }


def run(options: BenchOptions, console: Console) -> dict[str, Any]:
    from benchmarks import ingest, parse, reads
    from benchmarks.stack import make_stack

    if not console.is_terminal:
        console.width = 160  # a table in a log file or the README needs the room
    logging.getLogger("httpx").setLevel(logging.WARNING)
    results: dict[str, Any] = {"machine": machine(), "options": _jsonable(asdict(options))}
    sections: dict[str, Any] = {}
    results["sections"] = sections
    stack = make_stack(options.pg_admin_url, options.redis_url)
    began = time.perf_counter()

    def section(name: str, fn: Callable[[], dict[str, Any]]) -> None:
        if name not in options.sections:
            return
        console.log(f"[bold]{name}[/bold] …")
        start = time.perf_counter()
        try:
            sections[name] = fn()
        except Exception as exc:  # noqa: BLE001  one failed section must not hide the others
            sections[name] = {"error": f"{type(exc).__name__}: {exc}"}
            console.print(traceback.format_exc())
        sections[name]["section_s"] = round(time.perf_counter() - start, 1)
        console.log(f"{name} done in {sections[name]['section_s']} s")

    try:
        stack.setup()
        big = parse.large_vcf(options.cache_dir, options.parse_records)
        section("parse", lambda: parse.run(options.cache_dir, options.parse_records,
                                           options.parse_repeats))  # fmt: skip

        def memory() -> dict[str, Any]:
            out = {"plasma": ingest.memory(stack, big, "plasma", timeout=600)}
            if options.memory_tissue:
                out["tissue"] = ingest.memory(stack, big, "tissue", timeout=600)
            return out

        section("memory", memory)
        if {"latency", "throughput"} & set(options.sections):
            worker = stack.start_worker(concurrency=options.worker_concurrency)
            api, base = stack.start_api(workers=options.api_workers)
            section("latency", lambda: ingest.latency(stack, base, worker, options.latency_uploads,
                                                      options.panel_records))  # fmt: skip
            section(
                "throughput",
                lambda: ingest.throughput(
                    stack, base, worker,
                    samples_n=options.throughput_samples,
                    patients_n=max(1, options.throughput_samples // options.draws_per_patient),
                    concurrency=options.worker_concurrency,
                    uploaders=options.uploaders,
                    panel_size=options.panel_records,
                    timeout=600,
                ),
            )  # fmt: skip
            stack.stop(api)
            stack.stop(worker)
        section(
            "reads",
            lambda: reads.run(
                stack,
                patients_n=options.read_patients,
                samples_per=options.read_samples,
                variants_per=options.read_variants,
                api_workers=options.api_workers,
                one_client_requests=options.one_client_requests,
                wrk_seconds=options.wrk_seconds,
                connections=options.wrk_connections,
            ),
        )
    finally:
        stack.teardown(keep_database=options.keep_database)
    results["total_s"] = round(time.perf_counter() - began, 1)
    # Other work on the machine skews every number: the load is recorded with them.
    results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    options.output.write_text(json.dumps(results, indent=2) + "\n")
    console.print(summary_table(results))
    console.log(f"results in {options.output}; total {results['total_s']} s")
    return results


def summary_table(results: dict[str, Any]) -> Table:
    m = results["machine"]
    table = Table(
        title=f"ctdna bench · {m['date']} · {m['nproc']} CPU ({m['cpu']}) · {m['memory']} · "
        f"load {m['loadavg_start'][0]} → {m.get('loadavg_end', ['?'])[0]}",
        show_lines=False,
    )
    for column in ("section", "measure", "value", "target", "met"):
        table.add_column(column)
    for row in summary_rows(results["sections"]):
        table.add_row(*row)
    return table


def summary_rows(s: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    rows: list[tuple[str, str, str, str, str]] = []

    def add(
        section: str, measure: str, value: str, target: str = "", ok: bool | None = None
    ) -> None:
        verdict = "" if ok is None else ("yes" if ok else "NO")
        rows.append((section, measure, value, target, verdict))

    for name in SECTIONS:
        if "error" in s.get(name, {}):
            add(name, "error", s[name]["error"][:120], "", False)
    p = s.get("parse", {})
    if "ratio" in p:
        add("1 parse", f"read_vcf plasma, {p['records']:,} records ({p['file_mb']} MB)",
            f"{p['read_vcf_plasma_s']} s")  # fmt: skip
        add("1 parse", f"bcftools view -T targets.bed ({p['bcftools']})", f"{p['bcftools_s']} s")
        add("1 parse", "ratio read_vcf / bcftools", f"{p['ratio']}×", "≤ 2×", p["ratio"] <= 2)
        add("1 parse", "of which tabix_index (pysam, whole file)", f"{p['tabix_index_s']} s")
    lat = s.get("latency", {})
    if "p50_s" in lat:
        add("2 latency", f"panel upload → succeeded, {lat['uploads']} uploads: p50 / p95",
            f"{lat['p50_s']} / {lat['p95_s']} s", "p50 < 1 s", lat["p50_s"] < 1)  # fmt: skip
        task = lat["task_p50_s"]
        if task:
            add("2 latency", "p50 queue wait; task: DB claim / parse / DB store / analyses",
                f"{lat['queue_wait_p50_s']} s; {task['claim']} / {task['read']} / "
                f"{task['store']} / {task['analysis']} s")  # fmt: skip
    t = s.get("throughput", {})
    if "samples_per_s" in t:
        projected = 1000 / t["samples_per_s"]
        timed_out = " (timed out)" if t.get("timed_out") else ""
        add("3 throughput", f"{t['samples']} panel samples{timed_out}, "
            f"{t['worker_concurrency']} worker processes, HTTP upload",
            f"{t['wall_s']} s ({t['samples_per_s']}/s)")  # fmt: skip
        add("3 throughput", "1,000 samples at that rate", f"{projected:.0f} s", "< 120 s",
            projected < 120 and t["failed"] == 0)  # fmt: skip
        cap = t["share_of_worker_capacity"]
        add(
            "3 throughput",
            "worker capacity in tasks / outside (broker, Celery, idle)",
            " / ".join(f"{v:.0%}" for v in cap.values()),
        )
        if t.get("share_of_ingest_task_time"):
            parts = t["share_of_ingest_task_time"]
            add(
                "3 throughput",
                "ingest task time: DB / parse / analyses",
                " / ".join(f"{v:.0%}" for v in parts.values()),
            )
        add(
            "3 throughput",
            "queue wait p50 / p95; ingest task p50",
            f"{t['queue_wait_p50_s']} / {t['queue_wait_p95_s']} s; {t['ingest_task_p50_s']} s",
        )
    r = s.get("reads", {})
    if "one_client" in r:
        rows_info = ", ".join(f"{k} {v:,}" for k, v in r["rows"].items())
        add("4 reads", "database", rows_info)
        for name in ("trends", "mrd", "patient_page", "healthz"):
            one = r["one_client"][name]
            target = "≤ 5 / ≤ 20 ms" if name in ("trends", "mrd") else ""
            ok = one["p50_ms"] <= 5 and one["p99_ms"] <= 20 if target else None
            add("4 reads", f"{name}: one client p50 / p99 ({one['requests']} req)",
                f"{one['p50_ms']} / {one['p99_ms']} ms", target, ok)  # fmt: skip
        for name in ("healthz", "trends", "mrd", "patient_page"):
            w = r["wrk"][name]
            if "rps" not in w:
                add("4 reads", f"{name}: wrk", w.get("skipped", "?"))
                continue
            ratio = w.get("vs_healthz")
            target = "≥ 0.25× healthz" if name in ("trends", "mrd") else ""
            errors = w["non_2xx_3xx"] + w["socket_errors"]
            ok = (ratio or 0) >= 0.25 and errors == 0 if target else None
            add("4 reads", f"{name}: {r['wrk_connections']} clients rps (×healthz), errors",
                f"{w['rps']:,.0f} ({ratio}×), {errors}", target, ok)  # fmt: skip
    mem = s.get("memory", {})
    for kind in ("plasma", "tissue"):
        if kind in mem:
            x = mem[kind]
            add("5 memory", f"worker ingesting the large file as {kind}: peak RSS (baseline)",
                f"{x['peak_rss_mb']} MiB ({x['baseline_peak_rss_mb']}), {x['ingest_s']} s, "
                f"{x['status']}")  # fmt: skip
    return rows


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
