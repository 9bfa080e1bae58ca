"""The pure scientific core: VCF reading, normalisation, annotation, longitudinal statistics,
MRD calling. Imports the standard library, numpy, scipy, pysam and services.errors only."""
