"""The reading worklist: what is waiting to be read, most urgent first."""
