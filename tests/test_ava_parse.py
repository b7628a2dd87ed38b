"""AVA.txt, tags/challenges and the split rule, as plain functions."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ingest.ava import parse_ava_lines, parse_names, read_id_list, split_for


def _line(index: int, image_id: int, counts=(0, 1, 2, 5, 9, 12, 7, 3, 1, 0), tags=(4, 0), challenge=1396) -> str:
    return " ".join(str(v) for v in [index, image_id, *counts, *tags, challenge])


def test_good_lines_parse_into_counts_tags_and_challenge():
    parsed = parse_ava_lines([_line(1, 953619), _line(2, 953958, tags=(1, 13), challenge=1397)])
    assert parsed.lines_read == 2 and not parsed.rejects
    first, second = parsed.rows
    assert first.image_id == "953619" and first.counts == (0, 1, 2, 5, 9, 12, 7, 3, 1, 0) and first.line == 1
    assert (second.tag1, second.tag2, second.challenge_id) == (1, 13, 1397)


@pytest.mark.parametrize(
    "bad",
    [
        "1 953619 0 1 2 5 9 12 7 3 1 0 4 0",  # 14 tokens
        "1 953619 0 1 2 5 9 12 7 3 1 0 4 0 1396 7",  # 16 tokens
        "1 953619 0 1 2 five 9 12 7 3 1 0 4 0 1396",
        "1 953619 0 1 2 -5 9 12 7 3 1 0 4 0 1396",
        "1 953619 0 1 2 5.0 9 12 7 3 1 0 4 0 1396",
        "1  953619 0 1 2 5 9 12 7 3 1 0 4 0 1396",  # a double space is not a single separator
        b"1 95\xe96 0 1 2 5 9 12 7 3 1 0 4 0 1396",  # not ASCII
    ],
)
def test_unparsable_lines_are_rejected_as_line_n(bad):
    parsed = parse_ava_lines([_line(1, 10), bad, _line(3, 30)])
    assert [r.image_id for r in parsed.rows] == ["10", "30"]
    assert len(parsed.rejects) == 1
    reject = parsed.rejects[0]
    assert (reject.item_id, reject.stage) == ("line:2", "parse") and reject.reason.startswith("unparsable:")
    assert parsed.lines_read == 3


def test_crlf_and_trailing_blank_lines_are_tolerated_but_counted():
    parsed = parse_ava_lines([_line(1, 10) + "\r\n", "\n", "   \n", _line(2, 20) + "\n"])
    assert [r.image_id for r in parsed.rows] == ["10", "20"]
    assert parsed.lines_read == 2 and parsed.blank_lines == 2 and not parsed.rejects


def test_repeated_id_keeps_the_first_and_rejects_every_repeat_once():
    parsed = parse_ava_lines([_line(1, 10), _line(2, 10, counts=(1,) * 10), _line(3, 20), _line(4, 10)])
    assert [(r.image_id, r.line) for r in parsed.rows] == [("10", 1), ("20", 3)]
    assert [(r.item_id, r.stage) for r in parsed.rejects] == [("10", "parse"), ("line:4", "parse")]
    assert all(r.reason.startswith("duplicate:") and "line 1" in r.reason for r in parsed.rejects)
    assert len(parsed.rows) + len(parsed.rejects) == parsed.lines_read


def test_zero_vote_row_is_rejected_under_its_id():
    parsed = parse_ava_lines([_line(1, 10, counts=(0,) * 10), _line(2, 20)])
    assert [r.image_id for r in parsed.rows] == ["20"]
    assert [(r.item_id, r.stage) for r in parsed.rejects] == [("10", "ratings")]
    assert parsed.rejects[0].reason.startswith("zero votes:")


def test_absurd_vote_counts_and_ids_out_of_range_are_rejected_not_crashing():
    huge = (0, 0, 0, 0, 99_999_999_999, 0, 0, 0, 0, 1)
    parsed = parse_ava_lines([_line(1, 10, counts=huge), _line(2, 20, challenge=2**40), _line(3, 30)])
    assert [r.image_id for r in parsed.rows] == ["30"]
    assert [(r.item_id, r.stage) for r in parsed.rejects] == [("10", "ratings"), ("line:2", "parse")]
    assert parsed.rejects[0].reason.startswith("out of range:")


def test_names_split_on_the_first_space_only(tmp_path: Path):
    path = tmp_path / "challenges.txt"
    path.write_text(
        "1396 Green Things II\n1401 Red, White and Blue\n\nnot-a-number Foo\n1396 Repeat\n99999999999 Big\n"
    )
    rows, bad = parse_names(path)
    assert rows == [(1396, "Green Things II"), (1401, "Red, White and Blue")]
    assert [(r.item_id, r.stage) for r in bad] == [("challenges.txt:line:4", "names"),
                                                   ("challenges.txt:line:6", "names")]
    assert bad[0].reason == "unparsable: challenges.txt line 4 is not `id name`: 'not-a-number Foo'"


def test_id_list_reads_ids_and_refuses_garbage(tmp_path: Path):
    good = tmp_path / "generic_test.jpgl"
    good.write_text("953619\n 953958\n\n000123\n")
    assert read_id_list(good) == {"953619", "953958", "123"}
    bad = tmp_path / "bad.jpgl"
    bad.write_text("1\nabc\n")
    with pytest.raises(ValueError, match=r"bad.jpgl:2"):
        read_id_list(bad)


def test_split_rule_test_list_then_stable_five_percent_val():
    test_ids = {"5", "6"}
    assert split_for("5", test_ids, None) == "test"
    splits = [split_for(str(i), test_ids, None) for i in range(10, 20_010)]
    val_share = splits.count("val") / len(splits)
    assert 0.045 < val_share < 0.055 and splits.count("test") == 0
    # The rule is sha256 of "ava-val:<id>", so it is the same on every machine and Python run.
    for i in range(10, 200):
        f = int.from_bytes(hashlib.sha256(f"ava-val:{i}".encode()).digest()[:8], "big") / 2**64
        assert split_for(str(i), test_ids, None) == ("val" if f < 0.05 else "train")


def test_category_list_pair_leaves_unlisted_ids_without_a_split():
    train, test = {"1", "2"}, {"3"}
    assert split_for("3", test, train) == "test"
    assert split_for("1", test, train) in ("train", "val")
    assert split_for("4", test, train) is None
