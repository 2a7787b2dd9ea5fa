"""Model input declarations: shipped, cached, fetched from the API."""
