"""Pure: metering. GPU time from allocation lifetimes (``usage``); the energy ledger, prices and
invoices arrive with issue 11."""
