def pytest_addoption(parser):
    parser.addoption("--quick", action="store_true", help="only the quick benchmark cases")
