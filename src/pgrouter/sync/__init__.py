"""The blocking face: ``pgrouter.sync.psycopg.PoolManager``, ``pgrouter.sync.psycopg2.PoolManager``.

The async manager's API and decisions for threads, gevent and forking
servers, over one topology monitor on a thread of its own. Import a driver's
manager from its own module; this package imports no driver.
"""
