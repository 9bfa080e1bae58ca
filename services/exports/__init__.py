"""Exports other systems import: CSV of calls and variants, FHIR R4 Genomics Reporting bundles,
cBioPortal study files. Read-only over the stored samples, variants, events and analyses."""
