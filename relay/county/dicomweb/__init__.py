"""DICOMweb (PS3.18): QIDO-RS search, WADO-RS retrieve, STOW-RS store."""
