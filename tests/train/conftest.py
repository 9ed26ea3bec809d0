from harness_fixtures import harness  # noqa: F401  (fixture)
