"""Outgoing webhooks: endpoints a workspace registers, events published by the domains, and their
signed, retried, logged deliveries (Standard Webhooks)."""
