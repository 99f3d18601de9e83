"""The audit trail: who did what with patient data, append-only and hash-chained."""
