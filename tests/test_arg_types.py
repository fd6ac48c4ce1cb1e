"""The bounded whole-number argument type the process and CLI command lines share (storage/arg_types.py)."""

from __future__ import annotations

import argparse

import pytest

from sixfold.storage.arg_types import int_between

pytestmark = pytest.mark.unit


def test_a_number_inside_its_bounds_is_taken_and_anything_else_refused_with_a_sentence() -> None:
    parse = int_between(1, 10)
    assert [parse(t) for t in ("1", "10", " 7 ")] == [1, 10, 7]
    for text, words in (("0", "must be from 1 to 10, got 0"), ("11", "got 11"), ("x", "not a number: 'x'")):
        with pytest.raises(argparse.ArgumentTypeError, match=words):
            parse(text)
    parser = argparse.ArgumentParser(prog="p", exit_on_error=False)
    parser.add_argument("--n", type=int_between(0, 2**32))
    assert parser.parse_args(["--n", str(2**32)]).n == 2**32
    with pytest.raises(argparse.ArgumentError, match="must be from 0 to 4294967296"):
        parser.parse_args(["--n", str(2**64)])
