"""The county index: SQLAlchemy models, engine, migrations."""
