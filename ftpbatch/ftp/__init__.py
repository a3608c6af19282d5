"""The FTP front door (pyftpdlib): products as users, atomic uploads, FTPS, lock-down."""

# pyftpdlib.ioloop imports the deprecated asyncore/asynchat under a warnings
# filter; importing it before anything else of pyftpdlib keeps that so (tests
# run with warnings as errors).
import pyftpdlib.ioloop  # noqa: F401  (import order matters)
