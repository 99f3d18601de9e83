"""Turnaround times per stage, from the recorded study transitions."""
