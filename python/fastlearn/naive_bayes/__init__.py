"""Naive Bayes classifiers with scikit-learn's semantics and attributes: GaussianNB (C++
log-likelihood), MultinomialNB, ComplementNB, BernoulliNB and CategoricalNB. All fit with
partial_fit in chunks, predict in log space, and save/load without pickle."""

from fastlearn.naive_bayes._discrete import BernoulliNB, CategoricalNB, ComplementNB, MultinomialNB
from fastlearn.naive_bayes._gaussian import GaussianNB

__all__ = ["GaussianNB", "MultinomialNB", "ComplementNB", "BernoulliNB", "CategoricalNB"]
