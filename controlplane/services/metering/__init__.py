"""Metering's shells: counter readings into SQL, the usage ledger written from them."""
