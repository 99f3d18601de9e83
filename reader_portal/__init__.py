"""The web pages people use, on top of relay.county's services and API."""
