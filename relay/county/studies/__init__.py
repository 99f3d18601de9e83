"""Studies: index metadata from stored instances, record state transitions."""
