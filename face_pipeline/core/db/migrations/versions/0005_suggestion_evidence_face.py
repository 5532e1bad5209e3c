"""suggestions.evidence_face_id: the candidate's face a question's evidence points at, shown beside it

A person answering "is this X?" about a child's photo (a step of a chain across the years) or about a relative's
answers better beside the photo of X the faces resemble than beside X's best portrait. Display only: the face may
go with its photo (SET NULL), and the question stays what it was.

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('suggestions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('evidence_face_id', sa.String(length=100), nullable=True))
        batch_op.create_foreign_key('fk_suggestions_evidence_face_id', 'face_instances', ['evidence_face_id'], ['face_id'],
                                    ondelete='SET NULL')
        batch_op.create_index(batch_op.f('ix_suggestions_evidence_face_id'), ['evidence_face_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('suggestions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_suggestions_evidence_face_id'))
        batch_op.drop_constraint('fk_suggestions_evidence_face_id', type_='foreignkey')
        batch_op.drop_column('evidence_face_id')
