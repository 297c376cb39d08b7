"""Database: SQLAlchemy tables, engine set-up and Alembic migrations."""
