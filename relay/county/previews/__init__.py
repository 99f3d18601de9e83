"""Previews: what rendering made of each stored instance (thumbnail, ECG numbers, or a note)."""
