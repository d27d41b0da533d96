"""Engine steps: plain functions that receive the Spark session, paths and config."""
