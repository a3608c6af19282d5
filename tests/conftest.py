from tests.smsc.fixtures import smsc, smsc_factory  # noqa: F401
