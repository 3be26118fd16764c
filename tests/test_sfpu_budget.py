"""ttjax's SFPU held against the hardware's own measurements: for every Wormhole row of sfpu_accuracy_budget.yaml
for exp, reciprocal, rsqrt, sqrt, sigmoid, silu and gelu with Float16_b or Float32 in and out (both Dst modes, both
approx modes), tt-llk's sweep and golden run again on ttjax.sfpu give exactly the maximum error measured on the
chip, the number in the row's comment (and, for rows with a near-zero floor, the maximum over every lane too).
The harness is tests/sfpu_budget.py."""

import pytest

from tests import sfpu_budget as budget

ROWS = budget.load_rows()


def test_the_budget_is_the_wheels_and_has_every_row():
    ops = {r.op for r in ROWS}
    assert ops == set(budget.OPS), ops
    assert len(ROWS) == 6 * 16 + 8, len(ROWS)  # 4 in/out pairs x 2 Dst x 2 approx each, Silu without approx
    if budget.WHEEL_BUDGET.exists():  # the copy in tests/data says what the wheel says
        assert budget.parse_rows(budget.COPIED_BUDGET.read_text()) == ROWS


@pytest.mark.parametrize("op", sorted(budget.OPS))
def test_measured_maximum_error_is_reproduced(op):
    mismatches = []
    for row in (r for r in ROWS if r.op == op):
        m = budget.measure(row, budget.ttjax_result(row))
        assert m.nonfinite_failures == 0, f"{row.line}: {m.nonfinite_failures} lanes disagree on being finite"
        figure = m.maximum if row.floor_atol is None else m.outside_floor
        if figure != row.measured or (row.every_lane is not None and m.maximum != row.every_lane):
            mismatches.append(f"{row.line} -> ttjax {figure} ULP (every lane {m.maximum}), worst at x={m.worst_input}")
    assert not mismatches, "\n".join(mismatches)
