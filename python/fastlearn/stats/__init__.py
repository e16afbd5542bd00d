"""Maximum-likelihood tools from our notes: MLEs of the Gaussian, Bernoulli, categorical,
Poisson, exponential and gamma distributions, their Fisher information, the Cramér–Rao
bound, and a simulation comparing an estimator's variance with that bound."""

from fastlearn.stats._mle import (DISTRIBUTIONS, VarianceStudy, cramer_rao_bound, fisher_information, mle,
                                  mle_bernoulli, mle_categorical, mle_exponential, mle_gamma, mle_gaussian,
                                  mle_poisson, sample, simulate_variance)

__all__ = ["DISTRIBUTIONS", "VarianceStudy", "cramer_rao_bound", "fisher_information", "mle", "mle_bernoulli",
           "mle_categorical", "mle_exponential", "mle_gamma", "mle_gaussian", "mle_poisson", "sample",
           "simulate_variance"]
