"""A³E — Autonomous Accreditation & Audit Engine."""

__version__ = "0.1.0"
