"""Shared DICOM vocabulary of the edge and the county: pure, no I/O to servers."""
