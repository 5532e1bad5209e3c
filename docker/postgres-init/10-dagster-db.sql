-- One PostgreSQL server, two databases: the face library (DATABASE_URL, migrated by Alembic through
-- `face-pipeline init`) and Dagster's run/event/schedule storage (docker/dagster.yaml).
-- The postgres image runs this once, when the data volume is empty; POSTGRES_DB creates `face_pipeline`.
CREATE DATABASE dagster;
