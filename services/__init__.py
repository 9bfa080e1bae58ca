"""ctDNA monitoring service: API, domain services and the pure scientific core."""
