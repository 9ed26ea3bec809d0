"""The comparison of regenerated reports with committed ones tolerates rounding, nothing more."""

from __future__ import annotations

import pytest
from committed import assert_csv_agrees, assert_text_contains, line_agrees


def test_a_last_printed_digit_may_differ_by_one_unit_but_no_more():
    want = "| noise40-sam | **reproduced** | +0.0832 [+0.0625, +0.1039] | 5 |"
    assert line_agrees("| noise40-sam | **reproduced** | +0.0832 [+0.0624, +0.1039] | 5 |", want)
    assert not line_agrees("| noise40-sam | **reproduced** | +0.0832 [+0.0623, +0.1039] | 5 |", want)
    assert not line_agrees("| noise40-sam | inconclusive | +0.0832 [+0.0625, +0.1039] | 5 |", want)
    assert not line_agrees("| noise40-sam | **reproduced** | +0.083 [+0.0625, +0.1039] | 5 |", want)
    assert not line_agrees("| noise40-sam | **reproduced** | +0.0832 [+0.0625, +0.1039] | 4 |", want)
    assert not line_agrees("| noise40-sam | **reproduced** | −0.0832 [+0.0625, +0.1039] | 5 |", want)


def test_a_block_must_appear_line_after_line():
    text = "# t\n| a | 0.50 |\n| b | 0.25 |\nend\n"
    assert_text_contains("| a | 0.51 |\n| b | 0.25 |", text)
    with pytest.raises(AssertionError):
        assert_text_contains("| b | 0.25 |\n| a | 0.50 |", text)


def test_csv_numbers_agree_to_1e_9_relative_and_text_exactly(tmp_path):
    want = tmp_path / "want.csv"
    want.write_text("claim,verdict,mean_gap,ci_low\nc,reproduced,0.041000000000000036,nan\n")
    got = tmp_path / "got.csv"
    got.write_text("claim,verdict,mean_gap,ci_low\nc,reproduced,0.04100000000000004,nan\n")
    assert_csv_agrees(got, want)  # one ulp
    got.write_text("claim,verdict,mean_gap,ci_low\nc,reproduced,0.04100000000012,nan\n")
    assert_csv_agrees(got, want)  # the 11th digit (scipy versions)
    for bad in ("c,reproduced,0.0410001,nan", "c,inconclusive,0.041000000000000036,nan",
                "c,reproduced,0.041000000000000036,0.1"):
        got.write_text(f"claim,verdict,mean_gap,ci_low\n{bad}\n")
        with pytest.raises(AssertionError):
            assert_csv_agrees(got, want)
