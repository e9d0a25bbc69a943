"""reference data: categories, warehouses, settings

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    categories = sa.table("categories", sa.column("id"), sa.column("parent_id"), sa.column("name"))
    op.bulk_insert(
        categories,
        [
            {"id": 1, "parent_id": None, "name": "Books"},
            {"id": 2, "parent_id": None, "name": "Games"},
            {"id": 3, "parent_id": 1, "name": "Fiction"},
            {"id": 4, "parent_id": 1, "name": "Science"},
        ],
    )
    warehouses = sa.table("warehouses", sa.column("id"), sa.column("code"), sa.column("city"))
    op.bulk_insert(
        warehouses,
        [{"id": 1, "code": "BER", "city": "Berlin"}, {"id": 2, "code": "LYS", "city": "Lyon"}],
    )
    settings = sa.table("settings", sa.column("id"), sa.column("key"), sa.column("value"))
    op.bulk_insert(
        settings,
        [
            {"id": 1, "key": "currency", "value": "EUR"},
            {"id": 2, "key": "tax_rate", "value": "0.19"},
        ],
    )


def downgrade() -> None:
    op.execute("DELETE FROM settings")
    op.execute("DELETE FROM warehouses")
    op.execute("DELETE FROM categories")
