"""Agent use cases: registration, reports (ingest and fold), desired state, logs, GPU health, and
node liveness."""
