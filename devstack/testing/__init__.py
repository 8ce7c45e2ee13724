"""What the tests, benchmarks and demo need of rackpilot and the product must not ship as its
own: the safety-invariant checks (:mod:`devstack.testing.invariants`), the ``selftest`` job
handler (:mod:`devstack.testing.selftest`, registered only by an executor started with
``RACKPILOT_ENABLE_SELFTEST=true``, through the ``rackpilot.test_handlers`` entry point) and
the asyncio fleet inventory the fleet benchmark measures against the executor's
(:mod:`devstack.testing.redfish_async`).

The product (``executor/``, ``console/``) never imports this package or any other part of
``devstack``; ``tests/unit/test_product_apart_from_harness.py`` checks it.
"""
