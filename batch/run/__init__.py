"""A run: plan -> upload -> submit -> poll -> download."""
