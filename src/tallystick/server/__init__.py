"""The tallystick server: REST API, OTLP intake and the billing services behind them."""
