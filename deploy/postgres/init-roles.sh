#!/bin/sh
# First start of the database volume: the migration owner (owns every table, runs
# `ctdna migrate`) and the application role (the API, workers and beat: rows, never tables).
# `ctdna migrate --app-role ctdna_app` grants the application role after each migration.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<SQL
CREATE ROLE ctdna_owner LOGIN PASSWORD '${CTDNA_OWNER_DB_PASSWORD}';
CREATE ROLE ctdna_app LOGIN PASSWORD '${CTDNA_APP_DB_PASSWORD}';
CREATE DATABASE ctdna OWNER ctdna_owner;
REVOKE ALL ON DATABASE ctdna FROM PUBLIC;
GRANT CONNECT ON DATABASE ctdna TO ctdna_app;
SQL
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname ctdna <<SQL
ALTER SCHEMA public OWNER TO ctdna_owner;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
SQL
