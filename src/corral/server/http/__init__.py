"""HTTP: routes, authentication, error mapping."""
