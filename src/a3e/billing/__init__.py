"""Billing: plans and their limits, Stripe Checkout and the customer portal, incoming Stripe events.

An optional feature (`a3e.features.BILLING`): without Stripe configured every workspace is on the
default plan (unlimited unless configured) and the billing endpoints answer 503. Importing this
package does no I/O and does not import the Stripe library.
"""
