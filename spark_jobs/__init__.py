"""PySpark jobs: pure DataFrame -> DataFrame transforms plus a main() that does the I/O."""
