"""The process runtime: per-process resources, background loops, settings and the launcher."""
