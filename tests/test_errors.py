"""attriblm.errors.one_line: a library exception's message as one line of an error message."""

from __future__ import annotations

from attriblm.errors import one_line


def test_first_line_and_a_colon_header_joins_the_next():
    assert one_line(OSError("no such file\n  at line 3\n")) == "no such file"
    assert one_line(ValueError("Error(s) in loading:\n\n  size mismatch\n  more")) == (
        "Error(s) in loading: size mismatch"
    )
    assert one_line(ValueError("last:")) == "last:"


def test_empty_message_is_the_class_name_and_long_ones_are_cut():
    assert one_line(KeyError()) == "KeyError"
    assert one_line(RuntimeError(" \n ")) == "RuntimeError"
    assert one_line(RuntimeError("x" * 1000)) == "x" * 400
