"""The pipeline fuzzer's reduced run (bench/pipeline_fuzz.py has the 1,000,000-line form and the path it covers).

Random and adversarial JSON lines, cut into random reads, through the decoder's boundary, the queue, the
pipeline thread and a real SQLite journal: every valid event journalled exactly once, every invalid line
quarantined exactly once, bad commands answered with an error, the pipeline thread alive throughout.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.pipeline_fuzz import INVALID, run


@pytest.mark.parametrize("seed", [7, 2026])
def test_random_and_poison_input_is_journalled_or_quarantined_exactly_once(tmp_path: Path, seed: int) -> None:
    res = run(3000, seed=seed, state=tmp_path, invalid_share=0.2)
    assert res["problems"] == []
    assert res["thread_deaths"] == 0 and res["journal_error"] is None
    assert res["invalid"] > 400 and set(res["invalid_by_kind"]) == set(INVALID)  # every poison kind was sent
    assert res["valid_transactions"] > 1500 and res["outbox_rows"] > 0  # the rules ran and announced alerts
    assert res["journal_transactions"] == res["valid_transactions"]
    assert res["quarantined"] == res["invalid"]
