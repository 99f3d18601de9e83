"""The reading queue: readers claim studies (STAT first), release them, open them."""
