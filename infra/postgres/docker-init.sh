#!/usr/bin/env bash
# Runs once in the postgres container (docker-entrypoint-initdb.d): one role and one database
# per service, each role able to open only its own database. Passwords come from the
# environment (BAZAAR_<SERVICE>_DB_PASSWORD).
set -euo pipefail
for service in auth product order inventory payment notification shipping registry; do
  var="BAZAAR_${service^^}_DB_PASSWORD"
  password="${!var:?$var must be set}"
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<SQL
CREATE ROLE bazaar_$service LOGIN PASSWORD '$password';
CREATE DATABASE bazaar_$service OWNER bazaar_$service;
REVOKE ALL ON DATABASE bazaar_$service FROM PUBLIC;
GRANT ALL ON DATABASE bazaar_$service TO bazaar_$service;
SQL
done
