"""Container images written by our own code, without Docker or a registry."""
