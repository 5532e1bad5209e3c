"""drop person_prototypes: written on every organise, never read

Prototypes are rebuilt from human-labelled faces whenever they are needed (they are cheap, and a stored copy
could only go stale). Downgrade recreates the empty table.

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('person_prototypes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_person_prototypes_person_id'))
    op.drop_table('person_prototypes')


def downgrade() -> None:
    op.create_table('person_prototypes',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('person_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('space', sa.String(length=40), nullable=False),
    sa.Column('face_id', sa.String(length=100), nullable=True),
    sa.Column('vector', sa.LargeBinary(), nullable=False),
    sa.Column('faces', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['person_id'], ['persons.person_id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('person_prototypes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_person_prototypes_person_id'), ['person_id'], unique=False)
