"""Alembic environment: runs on the connection that ``appleconnect.server.db`` passes in."""

from __future__ import annotations

from alembic import context

from appleconnect.server.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - always run through appleconnect.server.db
    raise RuntimeError("run migrations with `appleconnect migrate`")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
