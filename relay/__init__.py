"""County imaging and ECG relay: township edges forward DICOM to a county reading service."""

__version__ = "0.1.0"
