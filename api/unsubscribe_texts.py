"""The unsubscribe page's texts, in the customer's notification language.

They belong to the `notify` domain with the messages they end, apart from
api/subscriptions.py, whose errors are the API's (domain `api`).
"""

from __future__ import annotations

from parceltrack.i18n import N_

DOMAIN = "notify"
DONE = N_("You will no longer receive messages about parcel {tracking_id}.")
TITLE = N_("Unsubscribed")
