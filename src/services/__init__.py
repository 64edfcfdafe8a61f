"""Long-running Virtuoso services: the trading analysis loop and its health monitor.

Both run under systemd (``Type=notify``) as ``python -m src.services.<name> --config PATH``;
the code they share (config checking, JSON logging, sd_notify, HTTP, atomic writes) lives in
:mod:`src.services.common`.
"""
