"""Linear models from our notes: the Perceptron (C++ epoch loop) and Bayesian linear
regression with basis functions and the evidence approximation."""

from fastlearn.linear_model._bayesian import BayesianLinearRegression
from fastlearn.linear_model._perceptron import Perceptron

__all__ = ["Perceptron", "BayesianLinearRegression"]
