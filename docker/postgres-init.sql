-- Recommendations live in their own database, apart from Airflow's metadata.
CREATE DATABASE recsys;
