"""The credit ledger: grants, consumption, pending consumption, holds and balances."""
