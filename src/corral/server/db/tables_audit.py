"""The audit log table: append-only, written in batches by ``services.audit.AuditWriter``."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Integer, SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from corral.server.db.tables import Base

# Column sizes; the writer cuts longer values so that an insert never fails on length.
ID_LEN = 64
NAME_LEN = 128
PATH_LEN = 512
ACTION_LEN = 128
CODE_LEN = 64
IP_LEN = 64
MESSAGE_LEN = 2000


class AuditEventRow(Base):
    """One state-changing API call or login attempt (``corral.api.audit.AuditEvent``).

    Rows are only ever inserted: no code path updates or deletes them (retention, if any, is an
    operator's job on the database). ``id`` grows with insertion order.
    """

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    started_at: Mapped[dt.datetime] = mapped_column(index=True)
    finished_at: Mapped[dt.datetime] = mapped_column()
    actor_id: Mapped[str | None] = mapped_column(String(ID_LEN), nullable=True, index=True)
    actor_name: Mapped[str | None] = mapped_column(String(NAME_LEN), nullable=True)
    auth_method: Mapped[str | None] = mapped_column(String(16), nullable=True)
    project_id: Mapped[str | None] = mapped_column(String(ID_LEN), nullable=True, index=True)
    client_ip: Mapped[str | None] = mapped_column(String(IP_LEN), nullable=True)
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(PATH_LEN))
    action: Mapped[str] = mapped_column(String(ACTION_LEN), index=True)
    target_type: Mapped[str | None] = mapped_column(String(CODE_LEN), nullable=True)
    target_id: Mapped[str | None] = mapped_column(String(NAME_LEN), nullable=True)
    status_code: Mapped[int] = mapped_column(SmallInteger)
    result: Mapped[str] = mapped_column(String(8))
    error_code: Mapped[str | None] = mapped_column(String(CODE_LEN), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    operation_id: Mapped[str | None] = mapped_column(String(ID_LEN), nullable=True)
    request: Mapped[str | None] = mapped_column(Text, nullable=True)
    """The redacted request summary as JSON text (serialized once, by the middleware)."""
