"""The registry's storage: one module per table family, SQL only here, steps on a connection."""
