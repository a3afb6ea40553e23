import itertools
import json

import krippendorff
import numpy as np
import pytest
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from hggt import labels as L

P, S, N = "Positive", "Similar", "Negative"

# ----------------------------------------------------------------------------- the rule


def _by_median(triple):
    """A different formulation of the authors' rule for 3 votes: if some label occurs at least
    twice, it is the middle element of the sorted triple (in any total order); if all three
    differ the result is Similar with count 1."""
    if len(set(triple)) == 3:
        return S, 1, True
    middle = sorted(triple)[1]
    return middle, triple.count(middle), False


def test_rule_on_all_27_triples():
    triples = list(itertools.product(L.LABELS, repeat=3))
    assert len(triples) == 27
    for t in triples:
        agg = L.aggregate(t)
        assert (agg.label, agg.count, agg.is_tie) == _by_median(list(t)), t


# Written out by hand from SPEC §4 / ANNOTATION §6.7 ("PPN→P, PSN→S-tie, SSN→S, NNS→N").
HAND = [
    ((P, P, P), (P, 3, False)),
    ((P, P, N), (P, 2, False)),
    ((N, P, P), (P, 2, False)),
    ((P, S, N), (S, 1, True)),
    ((N, S, P), (S, 1, True)),
    ((S, S, N), (S, 2, False)),
    ((N, N, S), (N, 2, False)),
    ((S, N, N), (N, 2, False)),
    ((S, S, S), (S, 3, False)),
    ((N, N, N), (N, 3, False)),
    ((S, P, S), (S, 2, False)),
]


@pytest.mark.parametrize(("votes", "expected"), HAND)
def test_rule_hand_table(votes, expected):
    agg = L.aggregate(votes)
    assert (agg.label, agg.count, agg.is_tie) == expected


def test_rule_other_vote_counts_and_errors():
    assert L.aggregate([P, P, N, N]) == L.Aggregate(S, 2, True)  # no strict plurality
    assert L.aggregate([P, P, P, N]) == L.Aggregate(P, 3, False)
    assert L.aggregate([N]) == L.Aggregate(N, 1, False)
    with pytest.raises(ValueError, match="unknown label"):
        L.aggregate([P, "Good", N])
    with pytest.raises(ValueError, match="no votes"):
        L.aggregate([])


# ----------------------------------------------------------------------------- filters


def _effective(group_votes):
    return [L.aggregate(v).label for v in group_votes]


def test_filters_on_hand_made_groups():
    # Negatives but no positive: kept for Pos+Neg (trains against the original), dropped for Pos.
    neg_only = _effective([(N, N, S), (N, N, N), (S, S, S), (P, S, N)])
    assert neg_only == [N, N, S, S]
    assert not L.keep_pos(neg_only) and L.keep_posneg(neg_only)
    # One Positive vote per version is never enough: every version is a 3-way tie → Similar.
    one_vote_each = _effective([(P, S, N)] * 4)
    assert one_vote_each == [S] * 4
    assert not L.keep_pos(one_vote_each) and not L.keep_posneg(one_vote_each)
    # Two Positive votes on a single version keep the group in both variants.
    one_pos = _effective([(P, P, N), (S, S, S), (S, S, N), (S, S, P)])
    assert L.keep_pos(one_pos) and L.keep_posneg(one_pos)
    all_similar = [S, S, S, S]
    assert not L.keep_pos(all_similar) and not L.keep_posneg(all_similar)


# ----------------------------------------------------------------------------- names


def test_group_id_parsing_allows_dashes_in_image_ids():
    assert L.parse_group_id("0001-586-1469") == ("0001", 586, 1469)
    assert L.parse_group_id("motorcycle_left-0-502") == ("motorcycle_left", 0, 502)
    assert L.parse_group_id("img-with-dash-32-64") == ("img-with-dash", 32, 64)
    for bad in ("abc-1", "x-1-y", "-1-2", "x-1-2.5", "x-²-1"):
        with pytest.raises(ValueError, match="not <image>-<row>-<col>"):
            L.parse_group_id(bad)
    assert L.patch_name("a-1-2", "original") == "a-1-2.png"
    assert L.patch_name("a-1-2", "03") == "a-1-2_03.png"


# ----------------------------------------------------------------------------- the file

README = """{"Picture_1": {"Name": "0001-586-1469.png",    "File": "original", "Label": null},
 "Picture_2": {"Name": "0001-586-1469_01.png", "File": "01", "Label": "Positive"},
 "Picture_3": {"Name": "0001-586-1469_02.png", "File": "02", "Label": "Positive"},
 "Picture_4": {"Name": "0001-586-1469_03.png", "File": "03", "Label": "Positive"},
 "Picture_5": {"Name": "0001-586-1469_04.png", "File": "04", "Label": "Positive"},
 "Time_cost": {"Start": "2022-08-05 16:56:06", "End": "2022-08-05 16:56:49", "Total": 42}}
"""


def _doc(group="0001-586-1469", labels=(P, S, N, P)):
    doc = {"Picture_1": {"Name": f"{group}.png", "File": "original", "Label": None}}
    for k, (v, lab) in enumerate(zip(("01", "02", "03", "04"), labels, strict=True), start=2):
        doc[f"Picture_{k}"] = {"Name": f"{group}_{v}.png", "File": v, "Label": lab}
    doc["Time_cost"] = {"Start": "2022-08-05 16:56:06", "End": "2022-08-05 16:56:49", "Total": 42}
    return doc


def test_readme_example_parses():
    lf = L.parse_label_file(README, "0001-586-1469")
    assert lf.labels == (P, P, P, P)
    assert (lf.t_start, lf.t_end, lf.total_s, lf.source) == (
        "2022-08-05 16:56:06",
        "2022-08-05 16:56:49",
        42,
        None,
    )


def test_python_repr_fallback_parses():
    text = repr(_doc(labels=(N, N, S, P)))  # single quotes and None: not JSON
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    assert L.parse_label_file(text, "0001-586-1469").labels == (N, N, S, P)


def _reasons(doc_or_text, group="0001-586-1469"):
    text = doc_or_text if isinstance(doc_or_text, str) else json.dumps(doc_or_text)
    with pytest.raises(L.LabelFileError) as info:
        L.parse_label_file(text, group)
    return info.value.reasons


def test_every_malformed_kind_is_named():
    assert "not valid JSON" in _reasons(README[:-10])[0]
    assert "not valid JSON" in _reasons("")[0]
    assert _reasons("[1, 2]") == ["top level is list, expected an object"]

    doc = _doc()
    del doc["Picture_4"]
    assert _reasons(doc) == ["missing Picture_4"]

    doc = _doc()
    doc["Picture_3"]["Label"] = "Good"
    assert _reasons(doc) == ["Picture_3 has unknown label 'Good' (expected one of "
                             "['Positive', 'Similar', 'Negative'])"]  # fmt: skip
    for bad in ("positive", None, 1):
        doc["Picture_3"]["Label"] = bad
        assert "Picture_3 has unknown label" in _reasons(doc)[0]

    doc = _doc()
    doc["Picture_1"]["Label"] = P
    assert _reasons(doc) == ["Picture_1 (original) has Label 'Positive', expected null"]

    doc = _doc()
    doc["Picture_2"]["Name"] = "0001-586-1469_02.png"  # a version mix-up
    doc["Picture_5"]["File"] = "03"
    assert _reasons(doc) == [
        "Picture_2.Name is '0001-586-1469_02.png', expected '0001-586-1469_01.png'",
        "Picture_5.File is '03', expected '04'",
    ]
    # The file of another group.
    assert "expected 'other-1-2.png'" in _reasons(_doc(), group="other-1-2")[0]

    doc = _doc()
    doc["Picture_2"] = "Positive"
    del doc["Picture_3"]["Label"]
    doc["Source"] = 3
    doc["Time_cost"] = [42]
    assert _reasons(doc) == [
        "Picture_2 is str, expected an object",
        "Picture_3 lacks Label",
        "Source is 3, expected a string",
        "Time_cost is list, expected an object",
    ]


def test_release_json_round_trips_and_keeps_the_readme_layout():
    text = L.release_json("a-b-1-2", [P, S, N, S], source="proxy")
    data = json.loads(text)
    assert list(data) == [f"Picture_{i}" for i in range(1, 6)] + ["Time_cost", "Source"]
    assert data["Picture_1"] == {"Name": "a-b-1-2.png", "File": "original", "Label": None}
    assert data["Picture_4"] == {"Name": "a-b-1-2_03.png", "File": "03", "Label": N}
    assert len(text.splitlines()) == 7  # one top-level key per line
    lf = L.parse_label_file(text, "a-b-1-2")
    assert (lf.labels, lf.source, lf.total_s, lf.t_start) == ((P, S, N, S), "proxy", 0, None)
    with pytest.raises(ValueError, match="need 4 labels"):
        L.release_json("a-1-2", [P, S, N])


# ----------------------------------------------------------------------------- agreement

# Fleiss (1971) as worked on Wikipedia ("Fleiss' kappa", worked example): 10 subjects, 14 raters,
# 5 categories; P̄ = 0.378, P̄e = 0.213, κ = 0.210.
FLEISS_EXAMPLE = np.array(
    [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
)

# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", section C: 4 coders,
# 12 units, nominal data with missing values (0 here); published α = 0.743.
KRIPP_EXAMPLE = np.array(
    [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, 0, 0, 0],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, 0, 3],
        [0, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, 0],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, 0],
    ]
)


def test_published_examples():
    assert L.fleiss_kappa(FLEISS_EXAMPLE) == pytest.approx(0.210, abs=5e-4)
    counts = L.count_table(KRIPP_EXAMPLE.T, n_categories=5)
    assert L.krippendorff_alpha_nominal(counts) == pytest.approx(0.743, abs=5e-4)


def test_crafted_extremes():
    perfect = np.array([[3, 0, 0], [0, 3, 0], [0, 0, 3], [3, 0, 0]])
    assert L.fleiss_kappa(perfect) == pytest.approx(1.0)
    assert L.krippendorff_alpha_nominal(perfect) == pytest.approx(1.0)
    assert L.percent_agreement(perfect) == 1.0
    # Every item a 3-way split: no pair ever agrees.
    split = np.array([[1, 1, 1]] * 5)
    assert L.percent_agreement(split) == 0.0
    assert L.fleiss_kappa(split) == pytest.approx(-0.5)  # P̄ = 0, P̄e = 1/3 → −1/2
    # One category only: chance agreement is 1, both statistics are undefined.
    one = np.array([[3, 0, 0], [3, 0, 0]])
    assert np.isnan(L.fleiss_kappa(one)) and np.isnan(L.krippendorff_alpha_nominal(one))
    # [2,1,0] has 1 agreeing pair of 3; [3,0,0] has 3 of 3 → mean (1/3 + 1) / 2.
    assert L.percent_agreement(np.array([[2, 1, 0], [3, 0, 0]])) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="same number"):
        L.fleiss_kappa(np.array([[3, 0, 0], [2, 0, 0]]))


@pytest.mark.parametrize("seed", range(6))
def test_against_statsmodels_and_krippendorff(seed):
    rng = np.random.default_rng(seed)
    items, raters = int(rng.integers(5, 200)), int(rng.integers(2, 6))
    # Skewed labels (Positive dominates, as ANNOTATION §7 expects) plus some agreement structure.
    truth = rng.choice([1, 2, 3], size=items, p=[0.6, 0.25, 0.15])
    noisy = rng.choice([1, 2, 3], size=(items, raters))
    votes = np.where(rng.random((items, raters)) < 0.6, truth[:, None], noisy)
    counts = L.count_table(votes)
    table, _ = aggregate_raters(votes, n_cat=None)
    assert L.fleiss_kappa(counts) == pytest.approx(sm_fleiss_kappa(table), abs=1e-12)
    reference = krippendorff.alpha(reliability_data=votes.T, level_of_measurement="nominal")
    assert L.krippendorff_alpha_nominal(counts) == pytest.approx(reference, abs=1e-12)
    # With missing values (NaN for krippendorff, 0 for ours).
    holes = rng.random(votes.shape) < 0.2
    with_nan = np.where(holes, np.nan, votes.astype(float))
    reference = krippendorff.alpha(reliability_data=with_nan.T, level_of_measurement="nominal")
    ours = L.krippendorff_alpha_nominal(L.count_table(np.where(holes, 0, votes)))
    assert ours == pytest.approx(reference, abs=1e-12)


# ----------------------------------------------------------------------------- split


def test_test_split_is_keyed_per_group():
    ids = [f"img-{i}-0" for i in range(40)]
    n_pos = [i % 5 for i in range(40)]  # 16 groups have ≥ 3 effective positives
    test, qualifying = L.choose_test_groups(ids, n_pos, 6, 3, seed=0)
    assert qualifying == 16 and len(test) == 6 and test == sorted(test)
    assert all(n_pos[ids.index(g)] >= 3 for g in test)
    # Same answer from any order; a different seed gives another draw.
    order = np.random.default_rng(1).permutation(40)
    again, _ = L.choose_test_groups([ids[i] for i in order], [n_pos[i] for i in order], 6, 3, 0)
    assert again == test
    assert L.choose_test_groups(ids, n_pos, 6, 3, seed=1)[0] != test
    # Adding non-qualifying groups changes nothing; removing a test group replaces only it.
    more, _ = L.choose_test_groups(ids + ["new-1-1"], n_pos + [0], 6, 3, 0)
    assert more == test
    drop = test[0]
    keep = [(g, p) for g, p in zip(ids, n_pos, strict=True) if g != drop]
    fewer, _ = L.choose_test_groups([g for g, _ in keep], [p for _, p in keep], 6, 3, 0)
    assert len(set(fewer) - set(test)) == 1 and set(test) - set(fewer) == {drop}
    # Fewer qualify than asked: all of them.
    short, q = L.choose_test_groups(ids, n_pos, 100, 4, 0)
    assert q == 8 and short == sorted(g for g, p in zip(ids, n_pos, strict=True) if p >= 4)
