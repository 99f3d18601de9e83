"""Logins, bearer tokens and township site credentials."""
