"""The web console: connections, exports, run now and run history in a browser.

:mod:`exporter.console.app` builds the ASGI application over a host (:class:`ConsoleHost`);
:mod:`exporter.console.local` serves it on 127.0.0.1 for ``python -m exporter console`` and
``blueprints/console.py`` serves it from the Functions app. Templates and static assets ship in
this package (no CDN, no build step).
"""
