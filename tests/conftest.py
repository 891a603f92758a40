"""Test-wide setup: the toy model is registered for every test."""

import tests.toy  # noqa: F401  registers toy_video
