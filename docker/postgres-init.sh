#!/usr/bin/env bash
# Runs once, when the PostgreSQL volume is empty (docker-entrypoint-initdb.d): Airflow's metadata
# and the recommendation store get separate databases owned by separate logins, so neither can
# touch the other's tables. Passwords come from the container's environment (see docker/env.example).
set -euo pipefail

: "${PG_AIRFLOW_PASSWORD:?set PG_AIRFLOW_PASSWORD}"
: "${PG_RECSYS_PASSWORD:?set PG_RECSYS_PASSWORD}"

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
     -v airflow_pw="$PG_AIRFLOW_PASSWORD" -v recsys_pw="$PG_RECSYS_PASSWORD" <<'SQL'
CREATE ROLE airflow LOGIN PASSWORD :'airflow_pw';
CREATE DATABASE airflow OWNER airflow;
-- CREATEROLE: the store's first migration creates its NOLOGIN roles recsys_writer and recsys_reader.
CREATE ROLE recsys LOGIN CREATEROLE PASSWORD :'recsys_pw';
CREATE DATABASE recsys OWNER recsys;
REVOKE ALL ON DATABASE airflow FROM PUBLIC;
REVOKE ALL ON DATABASE recsys FROM PUBLIC;
GRANT CONNECT ON DATABASE recsys TO PUBLIC;  -- apps log in with their own roles IN ROLE recsys_reader
SQL
