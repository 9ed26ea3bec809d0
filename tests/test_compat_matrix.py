"""The compatibility page is written from the matrix's own files, and reads them right."""

from __future__ import annotations

from pathlib import Path

import compat_matrix

ROOT = Path(__file__).resolve().parents[1]


def test_the_committed_page_is_what_the_committed_run_files_give():
    assert (ROOT / "docs" / "compatibility.md").read_text() == compat_matrix.report()


def test_counts_reads_outcomes_and_names_a_whole_module_skip_by_its_reason(tmp_path):
    xml = tmp_path / "row.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="a" name="ok"/>'
        '<testcase classname="a" name="bad"><failure message="boom"/></testcase>'
        '<testcase classname="a" name="err"><error message="setup"/></testcase>'
        '<testcase classname="a" name="cuda"><skipped message="needs CUDA"/></testcase>'
        '<testcase classname="" name="tests.optim.test_optim_fsdp">'
        "<skipped message=\"collection skipped\">('/x/tests/optim/test_optim_fsdp.py', 21, "
        "\"Skipped: torch &lt; 2.8: no FSDP2 on the CPU\")</skipped></testcase>"
        "</testsuite></testsuites>"
    )
    outcomes, reasons = compat_matrix.counts(xml)
    assert outcomes == {"passed": 1, "failed": 1, "errors": 1, "skipped": 2}
    assert reasons == {"needs CUDA": 1,
                       "test_optim_fsdp.py, the whole module: torch < 2.8: no FSDP2 on the CPU": 1}
