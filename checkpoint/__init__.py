"""Checkpoint core: permit model, token format, Ed25519 signing, policy and verification."""
