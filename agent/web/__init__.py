"""The till page: a small web app served by the daemon for the shop's staff (issue 15).

``app.py`` the Flask routes and API, ``auth.py`` PIN sign-in, sessions and CSRF, ``view.py`` what the
page shows, ``server.py`` waitress in the daemon's own thread; ``templates/`` and ``static/`` are
everything the phone loads (no CDN: tills are often offline).
"""
