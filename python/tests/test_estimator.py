"""The estimator as scikit-learn's own checks see it, pickling, and the predictive
distribution at given target values (CDF, densities, CRPS) against closed forms."""

import copy
import json
import math
import os
import pickle
import tempfile
import warnings

import numpy as np
import pytest

import mdn

if os.environ.get("MDN_REQUIRE_PYTHON") == "1":  # CI: a missing sklearn fails, never skips
    import sklearn
else:
    sklearn = pytest.importorskip("sklearn")
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402


def data(n=400, seed=0, d=2):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(n, d)).astype(np.float32)
    y = (np.sin(3 * X[:, 0]) + 0.3 * X[:, 1] + rng.normal(0, 0.1 + 0.2 * np.abs(X[:, 0]))).astype(np.float32)
    return X, y


FAST = dict(epochs=15, hidden=[16], components=2, val_fraction=0, device="cpu", threads=1)


@parametrize_with_checks(
    [
        # The defaults, which adapt to the rows (cross-validated epochs below 1,500 rows).
        mdn.MDN(device="cpu", threads=1),
        mdn.MDN(covariance="full", activation="tanh", **{**FAST, "hidden": [16, 16]}),
        mdn.MDN(ensemble=2, **FAST),
    ]
)
def test_scikit_learns_estimator_checks(estimator, check):
    check(estimator)


def test_a_fitted_model_pickles_and_copies_to_the_same_bits():
    X, y = data()
    est = mdn.MDN(**FAST).fit(X, y)
    want = est.predict_distribution(X)
    for other in (pickle.loads(pickle.dumps(est)), copy.deepcopy(est)):
        got = other.predict_distribution(X)
        for name in ("pi", "mu", "sigma", "mean", "var"):
            assert np.array_equal(getattr(got, name), getattr(want, name)), name
        assert other.get_params() == est.get_params()
        assert other.n_features_in_ == 2
    # An unfitted one pickles too, and stays unfitted.
    with pytest.raises(mdn.NotFittedError):
        pickle.loads(pickle.dumps(mdn.MDN())).predict(X)


def test_cross_validate_in_worker_processes_returns_fitted_estimators():
    from sklearn.model_selection import cross_validate

    X, y = data(300)
    out = cross_validate(mdn.MDN(**FAST), X, y, cv=3, n_jobs=2, return_estimator=True)
    assert len(out["estimator"]) == 3
    for est in out["estimator"]:
        assert est.predict(X[:5]).shape == (5,)
    assert np.all(np.isfinite(out["test_score"]))


def test_not_fitted_is_scikit_learns_error():
    from sklearn.exceptions import NotFittedError

    assert mdn.NotFittedError is NotFittedError
    est = mdn.MDN()
    for call in (lambda: est.predict(np.zeros((2, 2))), lambda: est.predict_distribution(np.zeros((2, 2)))):
        with pytest.raises(NotFittedError, match="not fitted"):
            call()
    # NotFittedError is both of these, as scikit-learn's code expects.
    assert issubclass(NotFittedError, ValueError) and issubclass(NotFittedError, AttributeError)


def test_random_state_is_the_seed():
    X, y = data()
    a = mdn.MDN(**{**FAST, "random_state": 7}).fit(X, y)
    b = mdn.MDN(**{**FAST, "seed": 7}).fit(X, y)
    assert a.model_.to_json() == b.model_.to_json()
    c = mdn.MDN(**{**FAST, "random_state": np.random.RandomState(3)}).fit(X, y)
    assert c.predict(X[:3]).shape == (3,)
    with pytest.raises(ValueError, match="random_state"):
        mdn.MDN(**{**FAST, "random_state": "seven"}).fit(X, y)


def test_predict_with_return_std_is_the_mean_and_the_standard_deviation():
    X, y = data()
    est = mdn.MDN(**FAST).fit(X, y)
    mean, std = est.predict(X, return_std=True)
    d = est.predict_distribution(X)
    assert np.array_equal(mean, d.mean) and np.array_equal(std, np.sqrt(d.var))
    assert np.all(std > 0)


def test_the_point_prediction_passes_scikit_learns_r2_bar():
    """scikit-learn's check_regressors_train asks for R^2 > 0.5 on its regression data; the
    estimator's `score` is the mean log-likelihood instead (tagged poor_score), so the bar
    is checked here, on the mean."""
    from sklearn.datasets import make_regression
    from sklearn.metrics import r2_score
    from sklearn.preprocessing import StandardScaler

    X, y = make_regression(n_samples=200, n_features=10, n_informative=1, bias=5.0, noise=20, random_state=0)
    X = StandardScaler().fit_transform(X)
    y = (y - y.mean()) / y.std()
    est = mdn.MDN(device="cpu").fit(X, y)
    assert r2_score(y, est.predict(X)) > 0.5


def normal_cdf(z):
    return 0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))


def test_cdf_pdf_and_crps_are_the_closed_forms_of_the_predicted_mixture():
    X, y = data()
    est = mdn.MDN(**{**FAST, "components": 3}).fit(X, y)
    d = est.predict_distribution(X[:50])
    at = np.linspace(-2, 2, 50)
    pi, mu, sigma = d.pi, d.mu[:, :, 0], d.sigma[:, :, 0]
    z = (at[:, None] - mu) / sigma
    cdf = np.sum(pi * normal_cdf(z), axis=1)
    pdf = np.sum(pi * np.exp(-0.5 * z * z) / (sigma * math.sqrt(2 * math.pi)), axis=1)
    np.testing.assert_allclose(d.cdf(at), cdf, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(d.sf(at), 1 - cdf, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(d.pdf(at, marginal=True), pdf, rtol=1e-9)
    # One target: the marginal is the joint; the joint is the model's log-likelihood (f32
    # targets), and log_prob's.
    np.testing.assert_allclose(d.logpdf(at), np.log(pdf), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d.logpdf(at), est.log_prob(X[:50], at), rtol=0, atol=0)
    np.testing.assert_allclose(d.pdf(at), pdf, rtol=1e-5)
    # The quantile function inverts the CDF.
    for q in (0.05, 0.5, 0.9):
        np.testing.assert_allclose(d.cdf(d.ppf(q)), q, atol=1e-6)
    # CRPS: the mixture's closed form, E|Y - y| - E|Y - Y'| / 2.
    def a(m, s):
        return m * (2 * normal_cdf(m / s) - 1) + 2 * s * np.exp(-0.5 * (m / s) ** 2) / math.sqrt(2 * math.pi)

    first = np.sum(pi * a(at[:, None] - mu, sigma), axis=1)
    cross = np.sum(
        pi[:, :, None] * pi[:, None, :]
        * a(mu[:, :, None] - mu[:, None, :], np.sqrt(sigma[:, :, None] ** 2 + sigma[:, None, :] ** 2)),
        axis=(1, 2),
    )
    np.testing.assert_allclose(d.crps(at), first - 0.5 * cross, rtol=1e-6, atol=1e-9)


def test_a_threshold_for_every_row_and_a_probability_of_exceeding_it():
    X, y = data()
    d = mdn.MDN(**FAST).fit(X, y).predict_distribution(X[:20])
    p = d.sf(0.5)
    assert p.shape == (20,) and np.all((p >= 0) & (p <= 1))
    np.testing.assert_array_equal(p, d.sf(np.full(20, 0.5)))
    low, high = d.interval(0.8)
    np.testing.assert_allclose(d.cdf(high) - d.cdf(low), 0.8, atol=1e-6)
    with pytest.raises(ValueError, match="expected 20 row"):
        d.cdf(np.zeros(7))


def test_several_targets_give_a_value_per_target_and_a_joint_density():
    rng = np.random.default_rng(1)
    X = rng.uniform(-1, 1, size=(400, 2)).astype(np.float32)
    Y = np.column_stack([X[:, 0] + 0.1 * rng.normal(size=400), X[:, 1] * X[:, 0] + 0.1 * rng.normal(size=400)])
    for cov in ("diagonal", "full"):
        est = mdn.MDN(**{**FAST, "covariance": cov}).fit(X, Y)
        d = est.predict_distribution(X[:10])
        at = Y[:10]
        assert d.cdf(at).shape == (10, 2) and d.crps(at).shape == (10, 2)
        assert d.pdf(at, marginal=True).shape == (10, 2)
        np.testing.assert_array_equal(d.logpdf(at), est.log_prob(X[:10], at))
        # The same values for every row, per target.
        np.testing.assert_array_equal(d.cdf([0.0, 0.5]), d.cdf(np.tile([0.0, 0.5], (10, 1))))
        # A target's marginal: the mixture of its components' marginal normals.
        s = np.sqrt(np.einsum("nkjj->nkj", d.cov)) if cov == "full" else d.sigma
        z = (at[:, None, :] - d.mu) / s
        np.testing.assert_allclose(d.cdf(at), np.sum(d.pi[:, :, None] * normal_cdf(z), axis=1), rtol=1e-9, atol=1e-12)
        if cov == "diagonal":
            # Independent within each component: the joint density is the sum over
            # components of pi_k times the product of the marginals.
            comp = np.exp(-0.5 * z * z) / (s * math.sqrt(2 * math.pi))
            joint = np.sum(d.pi * np.prod(comp, axis=2), axis=1)
            np.testing.assert_allclose(d.pdf(at), joint, rtol=1e-5)


def test_a_text_column_is_categorical_and_booleans_are_numbers():
    pd = pytest.importorskip("pandas")
    X, y = data(200)
    # A text column is one indicator input per category: the same network as its one-hot
    # columns given as numbers (the model also records the categories).
    df = pd.DataFrame({"speed": X[:, 0], "region": ["north", "south"] * 100})
    hot = pd.DataFrame({"speed": X[:, 0], "region=north": [1.0, 0.0] * 100, "region=south": [0.0, 1.0] * 100})
    a, b = mdn.MDN(**FAST).fit(df, y), mdn.MDN(**FAST).fit(hot, y)
    assert json.loads(a.model_.to_json())["params"] == json.loads(b.model_.to_json())["params"]
    assert np.array_equal(a.predict(df), b.predict(hot))
    assert a.model_.categorical == [("region", ["north", "south"])]
    flags = pd.DataFrame({"speed": X[:, 0], "wet": X[:, 1] > 0})
    as_numbers = pd.DataFrame({"speed": X[:, 0], "wet": (X[:, 1] > 0).astype(np.float32)})
    a = mdn.MDN(**FAST).fit(flags, y)
    b = mdn.MDN(**FAST).fit(as_numbers, y)
    assert a.model_.to_json() == b.model_.to_json()
    assert np.array_equal(a.predict(flags), b.predict(as_numbers))
    # Regression (a new user): a DataFrame's .values with a text column (an object array)
    # gave numpy's "could not convert string to float: 'north'", no column named.
    with pytest.raises(ValueError, match=r"X: column 1 holds text \('north' in row 0\): give a pandas DataFrame"):
        mdn.MDN(**FAST).fit(df.values, y)
    # Text where a fitted model takes numbers is named.
    with pytest.raises(ValueError, match=r"'speed' \(\w+, e.g. 'fast'\).*not numbers"):
        a.predict(pd.DataFrame({"speed": ["fast"] * 3, "wet": [True] * 3}))


def test_an_option_named_transform_made_scikit_learn_take_the_estimator_for_a_transformer():
    # scikit-learn's checks take an estimator with a `transform` attribute for a transformer
    # (and refuse to collect); mdn train's --transform is `target_transform` here.
    est = mdn.MDN(target_transform="log")
    assert not hasattr(est, "transform")
    assert est.get_params()["target_transform"] == "log"
    assert json.loads(est._job())["transform"] == "log"


def test_n_features_in_counted_the_indicators_of_categorical_columns():
    pd = pytest.importorskip("pandas")
    X, y = data(200)
    df = pd.DataFrame({"speed": X[:, 0], "region": ["north", "south", "east", "west"] * 50})
    est = mdn.MDN(**FAST).fit(df, y)
    # scikit-learn's convention: the DataFrame's columns, not the 4 indicators made of one.
    assert est.n_features_in_ == 2
    assert list(est.feature_names_in_) == ["speed", "region"]
    assert len(est.model_.features) == 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "X has feature names ..." from scikit-learn
        p = est.predict(df)
        assert np.array_equal(est.predict(df[["region", "speed"]]), p)
    with pytest.raises(ValueError, match=r"lacks the model's column\(s\) \['region'\]"):
        est.predict(df[["speed"]])
    # A model file loaded says the same.
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.json")
        est.save(path)
        back = mdn.load(path)
    assert back.n_features_in_ == 2
    assert list(back.feature_names_in_) == ["speed", "region"]
    assert np.array_equal(back.predict(df), p)


def test_an_ensembles_history_mixed_its_members_epochs():
    X, y = data(200)
    est = mdn.MDN(ensemble=2, **{**FAST, "epochs": 3}).fit(X, y)
    # Each epoch says whose it is; a member's epochs are in order.
    members = [e["member"] for e in est.history_]
    assert set(members) == {1, 2}, est.history_
    for m in (1, 2):
        assert [e["epoch"] for e in est.history_ if e["member"] == m] == [1, 2, 3]
    single = mdn.MDN(**{**FAST, "epochs": 3}).fit(X, y)
    assert all("member" not in e for e in single.history_)
