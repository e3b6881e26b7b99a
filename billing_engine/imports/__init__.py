"""Move in from another biller without asking customers for anything.

* :mod:`.records` — what one imported subscription is (customer, card, plan, schedule)
  and the one mapping of a source's schedule onto the engine's period model;
* :mod:`.writer` — set-based, idempotent writes of validated records (external ids);
* :mod:`.csv_source` — ``billing import csv``: the documented column format, every row
  validated before anything is written;
* :mod:`.stripe_source` — ``billing import stripe``: reads a Stripe account through the
  official SDK (paginated, paced by the shared rate limit, resumable);
* :mod:`.cutover` — the switch-over: stop Stripe renewing, hand each subscription's next
  period to the engine, and the reconciliation report afterwards.
"""
