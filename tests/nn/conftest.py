"""Shared data for the nn tests: digits in [0, 1] with a fixed split."""

import pytest


@pytest.fixture(scope="session")
def digits():
    from fastlearn.nn.datasets import load_digit_images

    return load_digit_images(random_state=0)  # X_train, X_test, y_train, y_test
