"""The outbound delivery engine and customer notifications (`parceltrack notify`).

Messages are queued by any stage with storage.outbound.enqueue; this package sends
them (webhooks signed with HMAC-SHA256, e-mail over SMTP), retries them with
exponential backoff, dead-letters them after the retry window, and turns scans and
alerts of subscribed parcels into customer notifications.
"""
