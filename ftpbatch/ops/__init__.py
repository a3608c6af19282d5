"""The operator's view of a running gateway: metrics, health, status and the HTTP endpoint.

The room depends on :class:`ftpbatch.ops.health.GatewayView`, a small
protocol the gateway satisfies, never on ``service.py``. Importing the
package imports nothing heavy: ``ftpbatch status`` reads
:mod:`ftpbatch.ops.status` without prometheus_client or numpy.
"""
