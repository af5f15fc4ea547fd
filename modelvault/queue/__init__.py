"""The work queue that the legacy import and the folder scan both feed: ``pending_import``.

Rows come in as ``pending``; a worker claims a batch under a lease, hashes the
files with no transaction open, then settles them into the catalog and closes
their rows in one transaction that checks the lease. The modules, from the
bottom up:

- ``states``: the status machine (waiting and final statuses, the transitions,
  what "back to pending" writes);
- ``driver``: running SQL text on the driver itself (a list as one parameter,
  driver errors as SQLAlchemy's);
- ``statements``: every statement on ``pending_import`` a worker runs, built
  once per backend, with one lease guard and one clock;
- ``rows``: a claimed row as the worker holds it, and the tag ids it remembers;
- ``connection``: a worker's writing transactions on its held connection;
- ``leases``: claim, renew, hand back, fail, take over;
- ``finish``: the hashed files settled and their rows closed in one transaction;
- ``overview``: what is left, and rows put back in the queue by a person;
- ``owner``: who holds a lease, and whether that process died.
"""
