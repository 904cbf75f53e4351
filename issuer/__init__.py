"""Issuing permits: eligibility per channel, the durable registry, QR images, sweepers."""
