"""The security rows use both sides' fixtures: the county's (tests/conftest.py) and the edge's."""

from tests.edge.conftest import edge_settings, scp, spool  # noqa: F401
