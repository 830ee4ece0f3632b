"""Repetition plans: exact budget, integers ≥ 1, monotone where promised, hand-worked cases."""
import itertools

import numpy as np
import pytest

from analysis.repetition import SCALINGS, repetition_plan, total_repetitions

ALL = ["log10", "sqrt", "inverse_sqrt", "inverse_lin", "inverse_square", "inverse_log10",
       "layer_sort", "layer_sort_inverse", "layer_sort_bins2", "layer_sort_bins3",
       "layer_sort_inverse_bins2", "layer_sort_inverse_bins3"]
INCREASING = ["log10", "sqrt", "layer_sort", "layer_sort_bins2", "layer_sort_bins3"]
DECREASING = [s for s in ALL if s not in INCREASING]


def test_registry_holds_exactly_the_paper_scalings():
    assert sorted(SCALINGS) == sorted(ALL)


@pytest.mark.parametrize("sigma, budget, scaling, expected", [
    # w = 1/σ = 1, .5, .25; extra 3 → quotas 1.71, .86, .43 → floors 1,0,0 + two leftovers
    ([1.0, 2.0, 4.0], 2.0, "inverse_lin", [3, 2, 1]),
    # ranks 3,1,2,4; extra 2 → quotas .6,.2,.4,.8 → leftovers to sites 3 and 0
    ([0.3, 0.1, 0.2, 0.4], 1.5, "layer_sort", [2, 1, 1, 2]),
    # bins 1,1,2,2 → inverse weights 2,2,1,1; extra 6 → quotas 2,2,1,1
    ([0.1, 0.2, 0.3, 0.4], 2.5, "layer_sort_inverse_bins2", [3, 3, 2, 2]),
    # w = 1 + log10(σ/σ_min) = 1,2,3; extra 6 → quotas 1,2,3
    ([0.01, 0.1, 1.0], 3.0, "log10", [2, 3, 4]),
    # w = 1, 1/2, 1/3; extra 6 → quotas 3.27, 1.64, 1.09 → leftover to site 1
    ([0.01, 0.1, 1.0], 3.0, "inverse_log10", [4, 3, 2]),
    # w = 1,2,3; extra 3 → quotas .5,1,1.5; tie of remainders → the larger weight wins
    ([1.0, 4.0, 9.0], 2.0, "sqrt", [1, 2, 3]),
    # w = 1, 1/4; extra 4 → quotas 3.2, .8
    ([1.0, 2.0], 3.0, "inverse_square", [4, 2]),
    # w = 1/√σ = 1, 1/2; extra 3 → quotas 2, 1
    ([1.0, 4.0], 2.5, "inverse_sqrt", [3, 2]),
    # ranks 1..3 inverted → 3,2,1; extra 6 → quotas 3,2,1
    ([0.1, 0.2, 0.3], 3.0, "layer_sort_inverse", [4, 3, 2]),
    # 6 sites in 3 bins: 1,1,2,2,3,3 (sum 12); extra 6 → quotas .5,.5,1,1,1.5,1.5 → leftovers
    # by remainder .5, then larger weight first: sites 4, 5
    ([1, 2, 3, 4, 5, 6], 2.0, "layer_sort_bins3", [1, 1, 2, 2, 3, 3]),
    ([1, 2, 3, 4, 5, 6], 2.0, "layer_sort_inverse_bins3", [3, 3, 2, 2, 1, 1]),
])
def test_hand_worked_plans(sigma, budget, scaling, expected):
    assert repetition_plan(sigma, budget, scaling) == expected


def test_total_is_budget_times_sites_rounded_half_up():
    assert total_repetitions(1.5, 3) == 5
    assert total_repetitions(2.0, 11) == 22
    assert total_repetitions(1.1, 10) == 11
    assert sum(repetition_plan([0.1, 0.2, 0.3], 1.5, "inverse_lin")) == 5


def test_budget_of_one_repeats_nothing():
    assert repetition_plan([0.01, 1.0, 100.0], 1.0, "inverse_square") == [1, 1, 1]


def random_sigmas(rng, n):
    return list(10 ** rng.uniform(-3, 1, n))


@pytest.mark.parametrize("scaling", ALL)
def test_every_plan_is_exact_integral_and_at_least_one(scaling):
    rng = np.random.default_rng(42)
    for n, budget in itertools.product([1, 2, 5, 11, 16, 40], [1.0, 1.3, 2.0, 3.7, 10.0]):
        sigma = random_sigmas(rng, n)
        plan = repetition_plan(sigma, budget, scaling)
        assert len(plan) == n
        assert all(type(r) is int and r >= 1 for r in plan)
        assert sum(plan) == total_repetitions(budget, n)


@pytest.mark.parametrize("scaling", ALL)
def test_plans_follow_the_weights_and_equal_weights_differ_by_at_most_one(scaling):
    rng = np.random.default_rng(7)
    for n, budget in itertools.product([3, 8, 16], [1.5, 2.0, 4.2]):
        sigma = random_sigmas(rng, n)
        w = SCALINGS[scaling](np.asarray(sigma))
        plan = repetition_plan(sigma, budget, scaling)
        for a, b in itertools.permutations(range(n), 2):
            if w[a] > w[b]:
                assert plan[a] >= plan[b]
            elif w[a] == w[b]:
                assert abs(plan[a] - plan[b]) <= 1


@pytest.mark.parametrize("scaling", INCREASING)
def test_plain_scalings_give_robust_sites_at_least_as_much_weight(scaling):
    sigma = np.array([0.002, 0.01, 0.05, 0.3, 1.0, 4.0])
    w = SCALINGS[scaling](sigma)
    assert np.all(np.diff(w) >= 0) and w[-1] > w[0]


@pytest.mark.parametrize("scaling", DECREASING)
def test_inverse_scalings_give_less_robust_sites_more_weight(scaling):
    sigma = np.array([0.002, 0.01, 0.05, 0.3, 1.0, 4.0])
    w = SCALINGS[scaling](sigma)
    assert np.all(np.diff(w) <= 0) and w[0] > w[-1]


@pytest.mark.parametrize("scaling", DECREASING)
def test_inverse_plans_are_monotone_in_sigma_when_weights_are_distinct(scaling):
    sigma = [4.0, 0.002, 1.0, 0.05, 0.3, 0.01]  # unsorted on purpose
    plan = repetition_plan(sigma, 3.0, scaling)
    by_sigma = [plan[i] for i in np.argsort(sigma)]
    assert by_sigma == sorted(by_sigma, reverse=True)
    assert by_sigma[0] > by_sigma[-1]


@pytest.mark.parametrize("scaling", ALL)
def test_only_ratios_of_sigma_mid_matter(scaling):
    sigma = [0.02, 0.5, 0.07, 3.0, 0.2]
    assert repetition_plan(sigma, 2.4, scaling) == \
        repetition_plan([s * 37.0 for s in sigma], 2.4, scaling)


@pytest.mark.parametrize("scaling", ["layer_sort", "layer_sort_inverse_bins3"])
def test_rank_scalings_ignore_values_beyond_order(scaling):
    assert repetition_plan([0.1, 0.2, 0.3, 0.4], 2.0, scaling) == \
        repetition_plan([0.001, 0.5, 0.6, 90.0], 2.0, scaling)


def test_tied_sigmas_share_their_rank():
    w = SCALINGS["layer_sort"](np.array([0.1, 0.2, 0.2, 0.3]))
    np.testing.assert_array_equal(w, [1.0, 2.5, 2.5, 4.0])


@pytest.mark.parametrize("kwargs, match", [
    (dict(sigma_mid=[0.1, 0.2], budget_factor=2.0, scaling="cubic"), r"unknown scaling 'cubic'.*log10"),
    (dict(sigma_mid=[0.1, 0.2], budget_factor=0.9, scaling="log10"), "budget_factor must be >= 1"),
    (dict(sigma_mid=[0.1, 0.2], budget_factor=float("nan"), scaling="log10"), ">= 1"),
    (dict(sigma_mid=[0.1, 0.2], budget_factor="two", scaling="log10"), "must be a number"),
    (dict(sigma_mid=[], budget_factor=2.0, scaling="log10"), "non-empty"),
    (dict(sigma_mid=[0.1, 0.0], budget_factor=2.0, scaling="log10"), r"site\(s\) \[1\]"),
    (dict(sigma_mid=[-0.1, 0.2], budget_factor=2.0, scaling="log10"), "> 0"),
    (dict(sigma_mid=[0.1, float("nan")], budget_factor=2.0, scaling="log10"), "finite"),
])
def test_bad_input_raises_a_clear_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        repetition_plan(**kwargs)
