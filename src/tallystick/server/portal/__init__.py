"""The customer portal: short-lived links, created through the API, to a page that shows a
customer their plan, balances, usage, invoices and delivered value, with an upgrade button."""
