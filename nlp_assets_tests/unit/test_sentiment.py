import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from nlp_assets.kernels.sentiment import SentimentHead, train_sentiment_head


def _separable(n: int = 400, dim: int = 8, seed: int = 1):
    rng = np.random.default_rng(seed)
    labels = ["positive" if i % 2 else "negative" for i in range(n)]
    shift = np.array([1.5 if lab == "positive" else -1.5 for lab in labels])[:, None]
    x = rng.normal(size=(n, dim))
    x[:, 0] += shift[:, 0]
    domains = ["movies" if i % 4 < 2 else "drugs" for i in range(n)]
    return x, labels, domains


def test_training_reports_held_out_metrics_per_domain():
    x, labels, domains = _separable()
    result = train_sentiment_head(
        x, labels, domains, embedding_model="m", embedding_model_version="v"
    )
    assert result.metrics["n_train"] + result.metrics["n_test"] == len(labels)
    assert result.metrics["n_test"] == 80
    assert result.metrics["accuracy"] > 0.85  # the classes are 3 standard deviations apart
    assert 0 < result.metrics["macro_f1"] <= 1
    assert sorted(result.per_domain["domain"].to_list()) == ["drugs", "movies"]
    assert result.per_domain["n_test"].sum() == result.metrics["n_test"]


def test_head_round_trips_through_its_table_and_matches_scikit_learn():
    x, labels, domains = _separable()
    head = train_sentiment_head(
        x, labels, domains, embedding_model="m", embedding_model_version="v"
    ).head
    restored = SentimentHead.from_frame(head.to_frame())
    np.testing.assert_allclose(restored.predict_proba(x), head.predict_proba(x))
    assert restored.version == head.version
    assert restored.labels == ("negative", "positive")

    reference = LogisticRegression(C=4.0, max_iter=2_000).fit(x, labels)
    mine = SentimentHead(tuple(reference.classes_), reference.coef_, reference.intercept_, "m", "v")
    np.testing.assert_allclose(mine.predict_proba(x), reference.predict_proba(x), atol=1e-12)


def test_version_changes_with_the_weights():
    x, labels, domains = _separable()
    a = train_sentiment_head(
        x, labels, domains, embedding_model="m", embedding_model_version="v", seed=0
    ).head
    b = train_sentiment_head(
        x, labels, domains, embedding_model="m", embedding_model_version="v", seed=1
    ).head
    assert a.version != b.version
    assert len(a.version) == 12


def test_multiclass_head_gives_probabilities_that_sum_to_one():
    rng = np.random.default_rng(0)
    head = SentimentHead(("a", "b", "c"), rng.normal(size=(3, 4)), rng.normal(size=3), "m", "v")
    proba = head.predict_proba(rng.normal(size=(5, 4)))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert SentimentHead.from_frame(head.to_frame()).predict_proba(np.eye(4)) == pytest.approx(
        head.predict_proba(np.eye(4))
    )


def test_domain_weights_give_each_domain_the_same_total():
    from nlp_assets.kernels.sentiment import domain_weights

    domains = np.array(["movies"] * 9 + ["drugs"] * 3)
    weights = domain_weights(domains)
    assert weights[domains == "movies"].sum() == pytest.approx(weights[domains == "drugs"].sum())
    assert weights.mean() == pytest.approx(1.0)
