"""``chat-notifier dashboard``: the admin web app (issue 11).

Thin adapters over the libraries the command line uses: roles and settings are read
and written with :mod:`processors.admin` (the broadcast reader's rules), the Users page
runs :mod:`processors.diagnose`'s gathering and :mod:`processors.diagnosis`'s checklist,
the settings page's comparison is :class:`processors.whatif.Runs`. What is new here is
the web part: :mod:`.server` (pages, token, CSRF), :mod:`.feed` (the output topics
tailed into bounded memory for Activity and Overview) and :mod:`.chart` (inline SVG).
Templates and the stylesheet ship in ``processors/templates/dashboard/``.
"""
