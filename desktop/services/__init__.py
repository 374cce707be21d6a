"""QObject services: the only layer that does I/O for the widgets (in worker threads) and reports
back with signals. Each takes its dependencies through its constructor."""
