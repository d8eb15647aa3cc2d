"""The model card states which stage-2 run the avatar holds and how every candidate scored."""

from __future__ import annotations

from pipeline.evaluate.model_card import _selection_lines


def _candidate(seed: int, f1: float) -> dict:
    return {"seed": seed, "reaction_f1": f1, "reaction_precision": f1 - 0.1, "reaction_recall": f1 + 0.1,
            "jaw_corr_motion": 0.8, "per_rule_f1": {}}


def test_the_card_names_the_kept_stage2_seed_and_every_candidates_score():
    selection = {"split": "val", "lambda_video": 1.5, "noise_seeds": 2, "clips": 7, "chosen_seed": 18,
                 "candidates": [_candidate(17, 0.41), _candidate(18, 0.52)]}
    (line,) = _selection_lines(selection)
    assert "Stage 2 trained 2 times" in line
    assert "kept seed 18" in line
    assert "val split (7 clips, not trained on" in line
    assert "seed 17: F1 0.410 (P 0.31 / R 0.51)" in line
    assert "seed 18: F1 0.520" in line


def test_a_single_stage2_run_adds_no_selection_line():
    assert _selection_lines(None) == []
