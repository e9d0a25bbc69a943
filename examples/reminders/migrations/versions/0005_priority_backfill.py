"""reminder priority, backfilled from titles (a data migration)

Titles ending in "!" were how users marked urgent reminders before priorities
existed: they become priority 3, everything else 0. Three steps, as data
migrations on live tables must be: add the column nullable, fill it, then
make it NOT NULL with a default and a range check.

Revision ID: 0005
Revises: 0004
Create Date: 2025-10-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("reminders", sa.Column("priority", sa.SmallInteger, nullable=True))
    op.execute("UPDATE reminders SET priority = CASE WHEN rtrim(title) LIKE '%!' THEN 3 ELSE 0 END")
    op.alter_column("reminders", "priority", nullable=False, server_default="0")
    op.create_check_constraint("ck_reminders_priority", "reminders", "priority BETWEEN 0 AND 3")


def downgrade() -> None:
    op.drop_constraint("ck_reminders_priority", "reminders", type_="check")
    op.drop_column("reminders", "priority")
