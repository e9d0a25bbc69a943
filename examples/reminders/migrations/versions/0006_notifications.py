"""notification bookkeeping and a partial index for due reminders

Revision ID: 0006
Revises: 0005
Create Date: 2025-11-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("reminders", sa.Column("notified_at", sa.DateTime(timezone=True)))
    op.add_column(
        "reminders",
        sa.Column("notify_attempts", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index(
        "ix_reminders_due_open",
        "reminders",
        ["due_at"],
        postgresql_where=sa.text("completed_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_reminders_due_open", table_name="reminders")
    op.drop_column("reminders", "notify_attempts")
    op.drop_column("reminders", "notified_at")
