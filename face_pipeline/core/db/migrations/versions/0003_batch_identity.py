"""batch identity: a batch is its folder (photo_batches.folder_key, unique)

Revision ID: 0003
Revises: 0002

``folder_key`` is the SHA-256 of the batch folder's resolved path. Unique, so two folders can never share one
batch (before, ``photos/2023/trip`` and ``photos/2024/trip`` both became batch ``trip`` and the second ingest
deleted the first folder's faces). Existing rows are back-filled; when several old batches point at one folder,
the oldest keeps the key and the others stay NULL (legal in a unique index) until re-ingested.
"""
import hashlib

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('photo_batches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('folder_key', sa.String(length=64), nullable=True))
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT name, source_dir FROM photo_batches ORDER BY created_at, name")).all()
    taken: set[str] = set()
    for name, source_dir in rows:
        key = hashlib.sha256(str(source_dir).encode()).hexdigest()
        if key in taken:
            continue
        taken.add(key)
        conn.execute(sa.text("UPDATE photo_batches SET folder_key = :k WHERE name = :n"), {"k": key, "n": name})
    with op.batch_alter_table('photo_batches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_photo_batches_folder_key'), ['folder_key'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('photo_batches', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_photo_batches_folder_key'))
        batch_op.drop_column('folder_key')
