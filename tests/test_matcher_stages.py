"""benchmarks.matcher_stages: held-out seeds, stage discovery and the per-copy breakdown, on a
tiny real set."""
from __future__ import annotations

import os

import pytest

from benchmarks import matcher_stages as ms
from benchmarks.matcher_dev import run
from benchmarks.seeds import TUNING_SEEDS, held_out_seed
from preprocessing.matching import MatcherConfig


def test_held_out_seeds_never_are_tuning_seeds():
    seeds = {held_out_seed(s, k) for s in range(50) for k in range(len(ms.SETS))}
    assert not seeds & set(TUNING_SEEDS) and len(seeds) == 50 * len(ms.SETS)


def test_every_stage_switch_is_ablated():
    configs = ms.configurations()
    assert {"dense", "exact", "lanes"} <= set(ms.stage_switches())
    assert not set(ms.NOT_STAGES) & set(ms.stage_switches())
    assert {"base", "+lanes", "defaults", "all on"} <= set(configs)
    assert not configs["base"].lanes and configs["+lanes"].lanes and configs["all on"].dense
    assert configs["defaults"] == MatcherConfig()


def test_breakdown_names():
    assert ms.transform_of({"transform": "rescale", "placement": "small"}) == "rescale"
    assert ms.transform_of({"transform": "rotate+feather"}) == "rotation"
    assert ms.transform_of({"flip": "", "rot90": 0, "angle": 0.0, "scale": 1.0, "gain": 1.0, "offset": 0.0}) == \
        "translate"
    assert ms.placement_of({"kind": "lane"}) == "lane" and ms.placement_of({}) == "textured"
    assert ms.post_of({"jpeg_quality": 80, "noise_sigma": 2.0}) == "jpeg+noise" and ms.post_of({}) == "none"


def test_small_hard_set_is_scored_with_counts_that_add_up(tmp_path):
    folder = ms.make_set(str(tmp_path), "hard", 2, seed=3)
    s = ms.score(run(folder, MatcherConfig(), os.path.join(folder, "det.pkl")))
    assert s["TP"] + s["FN"] + s["FP"] + s["TN"] == 2
    assert 0.0 <= s["oF1"] <= 1.0 and s["images_per_s"] > 0
    forged = s["TP"] + s["FN"]
    assert sum(b for k, (a, b) in s["found"].items() if k.startswith("placement:")) == forged


def test_every_held_out_set_has_its_own_seed_and_unknown_sets_are_refused():
    from benchmarks.seeds import HELD_OUT_SETS, held_out_set_seed

    seeds = [held_out_set_seed(0, name) for name in HELD_OUT_SETS]
    assert len(set(seeds)) == len(HELD_OUT_SETS) and not set(seeds) & set(TUNING_SEEDS)
    assert held_out_set_seed(1, "photos") != held_out_set_seed(0, "photos")
    with pytest.raises(ValueError, match="unknown held-out set"):
        held_out_set_seed(0, "tuning")


def test_lookalike_benchmark_refuses_design_seeds_and_prints_its_table(capsys):
    from benchmarks import lookalikes
    from benchmarks.seeds import LOOKALIKE_DESIGN_SEEDS

    with pytest.raises(SystemExit):
        lookalikes.main(["--start", str(LOOKALIKE_DESIGN_SEEDS[-1].stop - 1), "--num", "2"])
    assert "overlap the design seeds" in capsys.readouterr().err
    counts = lookalikes.main(["--num", "1", "--kinds", "grid"])
    assert set(counts) == {("grid", "none"), ("grid", "blur")} and set(counts.values()) <= {0, 1}
    assert "| grid | " in capsys.readouterr().out
