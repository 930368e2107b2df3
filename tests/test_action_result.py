"""The one result type of every action executor: bounded, one-line description, the record stored on the action."""

from __future__ import annotations

from cluster.actions.result import MAX_DESCRIPTION, MAX_DETAILS, Outcome


def test_an_outcome_is_bounded() -> None:
    outcome = Outcome("email", "first line\r\nsecond\tline\x00" + "d" * 5000, "é" * MAX_DETAILS, 12.5)
    assert outcome.description.startswith("first line second line ") and len(outcome.description) == MAX_DESCRIPTION
    raw = outcome.details.encode()
    assert len(raw) <= MAX_DETAILS and outcome.details.endswith("(details cut at 32 KB)\n")
    raw.decode()  # never cut inside a character
    assert outcome.record() == {"code": "email", "description": outcome.description, "details": outcome.details,
                                "elapsed_ms": 12.5}  # fmt: skip
    assert not outcome.ok and Outcome().ok and Outcome().record() == {"code": 0, "description": "", "details": "",
                                                                      "elapsed_ms": 0.0}  # fmt: skip
