"""Hardening, round two (issue 18), the parts that need no server: the webhook guard on
IPv4 hidden in IPv6 (item 14), user text in plots as plain text (item 14), CSV/TSV cells a
spreadsheet would evaluate (item 8), the gene-symbol rule kept in two places (item 8), and the
cookie-signing key read by a process starting at the same moment (item 12)."""

from __future__ import annotations

import ipaddress
import json
import re
import threading
import time
from pathlib import Path

import pytest

from schemas.variants import GENE_SYMBOL
from services.alerts.guard import UnsafeWebhookUrl, check_url, is_public
from services.api import ui_auth
from services.exports.service import inert
from services.genomics import annotate
from services.reports import plots
from services.reports.figures import plotly_clones, plotly_timeline, timeline_model

LINK = '<a href="https://evil.example/">open the report</a>'
MATH = r"x$\frac{$y"


@pytest.mark.parametrize(
    "url", ["https://[::127.0.0.1]/hook", "https://[::a9fe:a9fe]/hook", "https://[::ffff:0:a00:1]/"]
)
def test_ipv4_compatible_and_translated_ipv6_addresses_are_not_public(url: str) -> None:
    with pytest.raises(UnsafeWebhookUrl, match="non-public"):
        check_url(url, frozenset())


def test_a_public_ipv6_address_still_passes() -> None:
    assert is_public(ipaddress.ip_address("2606:4700:4700::1111"))


def trends_with(drug: str, gene: str) -> dict[str, object]:
    return {
        "patient_id": "P-1",
        "therapy_lines": [{"drug": drug, "start_date": "2025-01-01", "stop_date": None}],
        "events": [],
        "samples": [
            {"sample_id": "S-1", "collection_date": "2025-02-01", "tumor_fraction": 0.01,
             "tumor_fraction_ci": [0.005, 0.02]},
        ],
        "variants": [
            {"gene": gene, "protein_change": "p.E545K", "locus_key": "chr3:179218303:G>A",
             "tracked": False, "points": [
                 {"collection_date": "2025-02-01", "vaf": 0.02, "alt_reads": 20, "depth": 1000}
             ]},
        ],
    }  # fmt: skip


def strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def test_user_text_in_the_interactive_plots_is_never_markup() -> None:
    resistance = {
        "events": [
            {"gene": "ESR1", "protein_change": LINK, "status": "emerging", "drug": LINK,
             "first_detected_date": "2025-02-01", "vaf": 0.02},
        ],
        "variants": [],
    }  # fmt: skip
    model = timeline_model(trends_with(LINK, LINK), {"calls": []}, resistance)
    figure = plotly_timeline(model)
    texts = strings(figure)
    assert not [t for t in texts if "<a" in t], [t for t in texts if "<a" in t]
    assert any("&lt;a href=" in t for t in texts)
    clones = plotly_clones(
        plots.clones_model(
            {"clones": [{"clone_id": 1, "status": "emerging",
                         "members": [{"gene": LINK, "protein_change": "p.E545K"}],
                         "ccf_series": [{"collection_date": "2025-02-01", "vaf": 0.01,
                                         "detected": True}]}]}
        )
    )  # fmt: skip
    assert not [t for t in strings(clones) if "<a" in t]
    json.dumps(figure)


@pytest.mark.parametrize("fmt", ["png", "svg"])
def test_user_text_in_the_static_plots_is_never_mathtext(fmt: str) -> None:
    trends = trends_with(MATH, "PIK3CA")
    image = plots.timeline(trends, {"calls": []}, {"events": [], "variants": []}, fmt=fmt)
    assert len(image) > 1000


@pytest.mark.parametrize(
    ("cell", "shown"),
    [
        ('=HYPERLINK("http://evil.example")', '\'=HYPERLINK("http://evil.example")'),
        ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1:A2)", "'@SUM(A1:A2)"),
        ("\t=1", "'\t=1"),
        ("\uff1d1+1", "'\uff1d1+1"),
        ("-12", "-12"),
        ("+0.5", "+0.5"),
        ("-1.5e-3", "-1.5e-3"),
        ("letrozole", "letrozole"),
        ("p.E545K", "p.E545K"),
    ],
)
def test_a_cell_a_spreadsheet_would_evaluate_is_quoted(cell: str, shown: str) -> None:
    assert inert(cell) == shown


def test_the_gene_symbol_rule_is_the_same_in_the_schema_and_the_reader() -> None:
    assert f"^{annotate.GENE_SYMBOL.pattern}$" == GENE_SYMBOL
    for symbol in ("ESR1", "PIK3CA", "HLA-DRB1", "RP11-34P13.7", "ENSG00000091831", "IGH@"):
        assert annotate.is_gene_symbol(symbol) and re.fullmatch(GENE_SYMBOL, symbol)
    for text in ('=HYPERLINK("x")', "@SUM(1)", "-ESR1", "<b>ESR1</b>", "A" * 33, ""):
        assert not annotate.is_gene_symbol(text)
    assert annotate.normalize_protein_change("p." + "A" * 200) is None


def test_a_key_file_being_created_by_another_process_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "secret_key"
    path.touch()  # created by a process that has not written its key yet

    def finish_writing() -> None:
        time.sleep(0.3)
        path.write_bytes(b"f" * 64)

    writer = threading.Thread(target=finish_writing)
    writer.start()
    try:
        assert ui_auth._key_file(path) == b"f" * 64
    finally:
        writer.join()


def test_processes_creating_the_key_file_at_once_agree_on_it(tmp_path: Path) -> None:
    path = tmp_path / "secret_key"
    results: list[bytes] = []
    start = threading.Barrier(8)

    def create() -> None:
        start.wait()
        results.append(ui_auth._key_file(path))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1 and len(results[0]) == 64
    assert path.read_bytes() == results[0]


def test_database_errors_never_carry_their_parameters() -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from services.db import make_engine

    engine = make_engine("sqlite://", pooled=False)
    try:
        with engine.connect() as conn, pytest.raises(DBAPIError) as failed:
            conn.execute(text("SELECT * FROM no_such_table WHERE x = :secret"), {"secret": "P-77"})
    finally:
        engine.dispose()
    assert "P-77" not in str(failed.value)
