"""Directory: agencies, officials, roles, policies, administration and HR import."""
