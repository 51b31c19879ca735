"""Webhooks: signed, retried notifications of billing events, sent from the outbox.

catalog (event names), targets (which URLs are allowed), sender (envelope and HTTP),
delivery (dispatch, claims, attempts, retries), worker (the background task), service
(settings and signing secret), thresholds and low_balance (billing-credits-low), routes.
"""
